//! A [`HostReport`] in the Prometheus (OpenMetrics) text format, through `prometheus-client`'s
//! encoder: one collector that describes every family and writes the report's values.
//!
//! Client series carry the labels `client` (token, hex), `pid`, `region` (empty for a TCP
//! client) and `peer` (empty for a region client). A client that is gone is not in the report,
//! so its series end with it.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use host_report::{ClientReport, HostReport, PathBytes, LATENCY_BOUNDS_US};

/// The report as an OpenMetrics text exposition (ending with `# EOF`).
pub fn render(report: &HostReport) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ReportCollector(report.clone())));
    let mut text = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a family here.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::error!("cannot encode the metrics: {e}");
    }
    text
}

#[derive(Debug)]
struct ReportCollector(HostReport);

type Labels = Vec<(&'static str, String)>;

/// A per-client gauge: name, help, and the field it shows.
type GaugeFamily = (&'static str, &'static str, fn(&ClientReport) -> u64);

/// A label value with the exposition's escapes (the encoder writes values as given).
fn escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn client_labels(c: &ClientReport) -> Labels {
    vec![
        ("client", c.client.clone()),
        ("pid", c.pid.to_string()),
        ("region", escaped(c.region.as_deref().unwrap_or(""))),
        ("peer", escaped(c.peer.as_deref().unwrap_or(""))),
    ]
}

fn with(mut labels: Labels, extra: &[(&'static str, &str)]) -> Labels {
    labels.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    labels
}

/// A value of one series.
enum Value {
    /// A gauge with a fraction (seconds).
    Gauge(f64),
    /// A gauge that counts (bytes, handles).
    Level(u64),
    /// A counter.
    Counter(u64),
}

impl EncodeMetric for Value {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Value::Gauge(v) => encoder.encode_gauge(v),
            Value::Level(v) => encoder.encode_gauge(v),
            Value::Counter(v) => {
                encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(v, None)
            }
        }
    }

    fn metric_type(&self) -> MetricType {
        match self {
            Value::Gauge(_) | Value::Level(_) => MetricType::Gauge,
            Value::Counter(_) => MetricType::Counter,
        }
    }
}

/// Writes one family: its descriptor, then each series.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels, Value)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a family of one series without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Value,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, value.metric_type())?;
    value.encode(metric)
}

fn paths(bytes: &PathBytes) -> [(&'static str, u64); 4] {
    [
        ("inline", bytes.inline),
        ("bulk", bytes.bulk),
        ("stream", bytes.stream),
        ("zero_copy", bytes.zero_copy),
    ]
}

impl Collector for ReportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = &self.0;
        let none = Labels::new;
        single(
            &mut encoder,
            "vgpu_host_uptime_seconds",
            "Seconds since vgpu-host started.",
            Value::Gauge(r.uptime_seconds),
        )?;
        family(
            &mut encoder,
            "vgpu_host_workers",
            "Worker processes: serving a client, or spare (driver loaded, waiting).",
            MetricType::Gauge,
            [
                (
                    with(none(), &[("state", "client")]),
                    Value::Level(r.workers),
                ),
                (with(none(), &[("state", "spare")]), Value::Level(r.spares)),
            ],
        )?;
        single(
            &mut encoder,
            "vgpu_host_clients_refused",
            "New clients refused because --max-clients were served.",
            Value::Counter(r.clients_refused),
        )?;
        if let Some(region) = &r.region {
            let labels = || vec![("region", escaped(&region.path))];
            family(
                &mut encoder,
                "vgpu_host_region_bulk_bytes",
                "Bytes of the region's bulk area.",
                MetricType::Gauge,
                [(labels(), Value::Level(region.bulk_bytes))],
            )?;
            family(
                &mut encoder,
                "vgpu_host_region_bulk_used_bytes",
                "Bytes of the region's bulk area owned now (pinned memory, messages in flight).",
                MetricType::Gauge,
                [(labels(), Value::Level(region.bulk_used_bytes))],
            )?;
        }
        let gauges: [GaugeFamily; 8] = [
            ("vgpu_client_gpu_memory_bytes", "Device memory the client's allocations hold.", |c| c.gpu_memory_bytes),
            ("vgpu_client_contexts", "Contexts the client holds (created, and active primary contexts).", |c| c.contexts),
            ("vgpu_client_modules", "Modules and libraries the client has loaded.", |c| c.modules),
            ("vgpu_client_streams", "Streams the client has created.", |c| c.streams),
            ("vgpu_client_events", "Events the client has created.", |c| c.events),
            ("vgpu_client_threads", "Guest threads being served (channels or connections).", |c| c.threads),
            ("vgpu_client_bulk_bytes", "Bytes of the region's bulk area the client owns (zero-copy pinned memory, messages in flight).", |c| c.bulk_bytes),
            ("vgpu_client_posted_backlog", "Request frames queued in the client's request rings, not yet taken by its worker.", |c| c.posted_backlog),
        ];
        for (name, help, value) in gauges {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Gauge,
                r.clients
                    .iter()
                    .map(|c| (client_labels(c), Value::Level(value(c)))),
            )?;
        }
        family(
            &mut encoder,
            "vgpu_client_age_seconds",
            "Seconds since the client's worker took it.",
            MetricType::Gauge,
            r.clients
                .iter()
                .map(|c| (client_labels(c), Value::Gauge(c.age_seconds))),
        )?;
        {
            let mut metric = encoder.encode_descriptor(
                "vgpu_client",
                "The client's worker and transport.",
                None,
                MetricType::Info,
            )?;
            for c in &r.clients {
                let worker = c.worker_pid.to_string();
                let labels = with(
                    client_labels(c),
                    &[("transport", c.transport.word()), ("worker_pid", &worker)],
                );
                metric.encode_info(&labels)?;
            }
        }
        family(
            &mut encoder,
            "vgpu_client_calls",
            "Calls served: synchronous and posted driver calls, and vgpu's own requests (special).",
            MetricType::Counter,
            r.clients.iter().flat_map(|c| {
                [
                    ("synchronous", c.calls.synchronous),
                    ("posted", c.calls.posted),
                    ("special", c.calls.special),
                ]
                .map(|(class, n)| {
                    (
                        with(client_labels(c), &[("class", class)]),
                        Value::Counter(n),
                    )
                })
            }),
        )?;
        {
            let mut metric = encoder.encode_descriptor(
                "vgpu_client_call_latency_seconds",
                "Time from having a synchronous driver call to having sent its reply.",
                None,
                MetricType::Histogram,
            )?;
            for c in &r.clients {
                let buckets: Vec<(f64, u64)> = c
                    .latency
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let bound = LATENCY_BOUNDS_US
                            .get(i)
                            .map_or(f64::MAX, |us| *us as f64 / 1e6);
                        (bound, *n)
                    })
                    .collect();
                let labels = client_labels(c);
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        c.latency.sum_seconds,
                        c.latency.count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        family(
            &mut encoder,
            "vgpu_client_copied_bytes",
            "Bytes copied between guest memory and the GPU, by direction and by the way they travelled.",
            MetricType::Counter,
            r.clients.iter().flat_map(|c| {
                let htod = paths(&c.copied.htod).map(|(path, n)| {
                    (
                        with(client_labels(c), &[("direction", "htod"), ("path", path)]),
                        Value::Counter(n),
                    )
                });
                let dtoh = paths(&c.copied.dtoh).map(|(path, n)| {
                    (
                        with(client_labels(c), &[("direction", "dtoh"), ("path", path)]),
                        Value::Counter(n),
                    )
                });
                htod.into_iter().chain(dtoh)
            }),
        )?;
        family(
            &mut encoder,
            "vgpu_client_deferred_errors",
            "Posted calls that failed (each reported by a later call, as CUDA reports asynchronous errors).",
            MetricType::Counter,
            r.clients
                .iter()
                .map(|c| (client_labels(c), Value::Counter(c.deferred_errors))),
        )?;
        family(
            &mut encoder,
            "vgpu_client_quota_refusals",
            "Requests refused by the client's quotas (--client-memory-mib, --client-contexts).",
            MetricType::Counter,
            r.clients.iter().flat_map(|c| {
                [
                    ("memory", c.refusals.memory),
                    ("contexts", c.refusals.contexts),
                ]
                .map(|(resource, n)| {
                    (
                        with(client_labels(c), &[("resource", resource)]),
                        Value::Counter(n),
                    )
                })
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host_report::{Histogram, Transport};

    fn client() -> ClientReport {
        ClientReport {
            client: "00000000000000ab".into(),
            pid: 42,
            transport: Transport::Region,
            region: Some("/dev/shm/odd\"name".into()),
            peer: None,
            worker_pid: 43,
            age_seconds: 1.5,
            counted: true,
            gpu_memory_bytes: 1 << 20,
            contexts: 1,
            modules: 2,
            streams: 3,
            events: 4,
            threads: 1,
            bulk_bytes: 0,
            posted_backlog: 0,
            calls: Default::default(),
            latency: Histogram {
                buckets: {
                    let mut b = vec![0; host_report::LATENCY_BUCKETS];
                    b[2] = 3;
                    b[host_report::LATENCY_BUCKETS - 1] = 1;
                    b
                },
                sum_seconds: 9.0,
            },
            copied: Default::default(),
            deferred_errors: 0,
            refusals: Default::default(),
        }
    }

    #[test]
    fn families_are_named_labelled_and_escaped() {
        let report = HostReport {
            version: host_report::REPORT_VERSION,
            host_pid: 1,
            uptime_seconds: 2.0,
            workers: 1,
            spares: 0,
            clients_refused: 0,
            region: None,
            clients: vec![client()],
        };
        let text = render(&report);
        let labels = r#"client="00000000000000ab",pid="42",region="/dev/shm/odd\"name",peer="""#;
        for line in [
            "vgpu_host_uptime_seconds 2.0".to_owned(),
            "vgpu_host_clients_refused_total 0".to_owned(),
            format!("vgpu_client_gpu_memory_bytes{{{labels}}} 1048576"),
            format!("vgpu_client_modules{{{labels}}} 2"),
            format!("vgpu_client_call_latency_seconds_count{{{labels}}} 4"),
            format!("vgpu_client_call_latency_seconds_bucket{{le=\"0.000004\",{labels}}} 3"),
            format!("vgpu_client_call_latency_seconds_bucket{{le=\"+Inf\",{labels}}} 4"),
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line}:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("{}"), "{text}");
    }
}

//! Command-line definition and dispatch. Each subcommand lives in its own module; adding one
//! means a variant here and a line in [`run`].

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::paths::{self, Root};
use crate::systemctl::CommandRunner;
use crate::{
    control_socket, doctor, host_install, install, recover, run as run_cmd, smi, status, top,
    trace_summary, uninstall, verify, vm_xml,
};

/// Install, verify and roll back vgpu in one systemd service.
#[derive(Debug, Parser)]
#[command(name = "vgpuctl", version, about)]
pub struct Cli {
    /// Act on a staged root: every path is resolved under DIR, and systemctl/journalctl are not
    /// run (the commands are printed instead).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Preload the shim into one service through a systemd drop-in (never /etc/ld.so.preload).
    Install(InstallArgs),
    /// Check that the shim is loaded in the service only, and that Ollama found CUDA.
    Verify(VerifyArgs),
    /// Restore exactly what `install` changed.
    Uninstall(UninstallArgs),
    /// Emergency: remove vgpu's drop-in and files, and the shim's lines in /etc/ld.so.preload.
    Recover(RecoverArgs),
    /// Show what is installed.
    Status(StatusArgs),
    /// Look for the problems that break deployments.
    Doctor(DoctorArgs),
    /// Host-side commands.
    #[command(subcommand)]
    Host(HostCommand),
    /// Run a command on this machine's GPU through vgpu (starts and stops vgpu-host).
    Run(RunArgs),
    /// List the GPUs as a program under vgpu sees them (`--host`: the host's clients).
    Smi(SmiArgs),
    /// The host's clients live: memory, call rate, latency, bytes copied (q quits).
    Top(TopArgs),
    /// Per function: calls, round trips to the host, posted calls and time, from a VGPU_TRACE file.
    TraceSummary(TraceSummaryArgs),
    /// The probe `smi` runs under the shim.
    #[command(hide = true)]
    SmiProbe,
}

/// Where `run` and `smi` find the host, the shim and the region.
#[derive(Debug, Args)]
pub struct RunTargetArgs {
    /// Region of a running vgpu-host (default: start one on a fresh /dev/shm region).
    #[arg(long, value_name = "PATH")]
    pub region: Option<PathBuf>,
    /// vgpu-host binary (default: next to vgpuctl).
    #[arg(long, value_name = "PATH")]
    pub host_bin: Option<PathBuf>,
    /// The shim (default: libvgpu-cuda.so next to vgpuctl).
    #[arg(long, value_name = "PATH")]
    pub shim: Option<PathBuf>,
    /// The NVML facade, libnvidia-ml.so.1 (default: libvgpu-nvml.so next to vgpuctl, if there).
    #[arg(long, value_name = "PATH", conflicts_with = "no_nvml")]
    pub nvml: Option<PathBuf>,
    /// Do not preload the NVML facade.
    #[arg(long)]
    pub no_nvml: bool,
}

/// `run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Host, shim and region.
    #[command(flatten)]
    pub target: RunTargetArgs,
    /// Leave the started host running after CMD ends.
    #[arg(long)]
    pub keep_host: bool,
    /// Trace CMD's CUDA calls (VGPU_TRACE to a file) and print `trace-summary` of them after it
    /// ends; the file is kept and named.
    #[arg(long)]
    pub trace_summary: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// `trace-summary` arguments.
#[derive(Debug, Args)]
pub struct TraceSummaryArgs {
    /// The trace file (VGPU_TRACE=FILE).
    pub file: PathBuf,
    /// Only calls that started at or after this many seconds (trace time).
    #[arg(long, value_name = "SECONDS")]
    pub since: Option<f64>,
    /// Only calls that started before this many seconds (trace time).
    #[arg(long, value_name = "SECONDS")]
    pub until: Option<f64>,
    /// Only calls between the last two calls of this function (e.g. the synchronisations
    /// around a benchmark's timed run); overrides --since/--until.
    #[arg(long, value_name = "FUNCTION")]
    pub last_between: Option<String>,
    /// Divide the counts by the calls of this function (one step each, e.g. cuStreamSynchronize).
    #[arg(long, value_name = "FUNCTION")]
    pub per: Option<String>,
    /// Rows to show.
    #[arg(long, default_value_t = 40)]
    pub limit: usize,
}

/// Which running host to ask (its control socket, `vgpu-host --control PATH`).
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The host's control socket.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// An instance of the installed vgpu-host@.service: its socket is
    /// /run/vgpu-host/NAME/control.sock.
    #[arg(long, value_name = "NAME", conflicts_with = "control")]
    pub instance: Option<String>,
}

impl ControlArgs {
    /// The socket to read.
    ///
    /// # Errors
    /// [`crate::Error::Refused`] when neither option is given.
    pub fn path(&self) -> Result<PathBuf, crate::Error> {
        match (&self.control, &self.instance) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(name)) => Ok(control_socket::instance_path(name)),
            (None, None) => Err(crate::Error::Refused(
                "give the host's control socket: --control PATH or --instance NAME".into(),
            )),
        }
    }
}

/// `smi` arguments.
#[derive(Debug, Args)]
pub struct SmiArgs {
    /// Host, shim and region.
    #[command(flatten)]
    pub target: RunTargetArgs,
    /// List every client of a running host instead (from its control socket).
    #[arg(long)]
    pub host: bool,
    /// The host to list (with `--host`).
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `top` arguments.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The host to watch.
    #[command(flatten)]
    pub control: ControlArgs,
    /// Seconds between reports.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub interval: f64,
    /// Print one table (two reports an interval apart) as plain text and exit.
    #[arg(long)]
    pub once: bool,
}

/// `install` arguments.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Service to preload the shim into.
    #[arg(long, default_value = "ollama")]
    pub service: String,
    /// The shim (soname libcuda.so.1).
    #[arg(long, default_value = paths::DEFAULT_LIB)]
    pub lib: PathBuf,
    /// Shared-memory region for the shim (VGPU_REGION).
    #[arg(long)]
    pub region: Option<String>,
    /// Restart the service afterwards.
    #[arg(long)]
    pub restart: bool,
    /// Print the plan and diffs; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Service to check.
    #[arg(long, default_value = "ollama")]
    pub service: String,
    /// Shim path (default: from the state file).
    #[arg(long)]
    pub lib: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `uninstall` arguments.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The service vgpu was installed into (default: the one the state file records); another
    /// service than the recorded one is refused.
    #[arg(long)]
    pub service: Option<String>,
    /// Restart the service afterwards.
    #[arg(long)]
    pub restart: bool,
    /// Print what would be restored; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `recover` arguments.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Service to clean when the state file is gone.
    #[arg(long, default_value = "ollama")]
    pub service: String,
    /// Shim path whose lines `recover` removes from /etc/ld.so.preload.
    #[arg(long, default_value = paths::DEFAULT_LIB)]
    pub lib: PathBuf,
    /// Restart the service afterwards.
    #[arg(long)]
    pub restart: bool,
    /// Print what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `doctor` arguments.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Service to check.
    #[arg(long, default_value = "ollama")]
    pub service: String,
    /// Shim path (default: from the state file).
    #[arg(long)]
    pub lib: Option<PathBuf>,
    /// Region path (default: from the state file).
    #[arg(long)]
    pub region: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `host` subcommands.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Install the vgpu-host@.service template unit.
    Install(HostInstallArgs),
    /// Print the libvirt <shmem> device XML of one VM's region (the one its host instance serves).
    VmXml(VmXmlArgs),
    /// Make the TLS material for `vgpu-host --listen`: a CA, a host and a client certificate.
    TlsInit(TlsInitArgs),
}

/// `host tls-init` arguments.
#[derive(Debug, Args)]
pub struct TlsInitArgs {
    /// Directory for ca.pem, ca.key, host.pem, host.key, client.pem, client.key (mode 0600;
    /// created if missing; existing files are never overwritten).
    pub dir: PathBuf,
    /// A DNS name or IP address guests reach the host by, for the host certificate
    /// (repeatable; default: localhost, 127.0.0.1, ::1 and this machine's host name).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
}

/// `host install` arguments.
#[derive(Debug, Args)]
pub struct HostInstallArgs {
    /// The host daemon binary.
    #[arg(long, default_value = paths::DEFAULT_HOST_BIN)]
    pub bin: PathBuf,
    /// Region path per instance (`%i` = instance name).
    #[arg(long, default_value = paths::DEFAULT_REGION_TEMPLATE)]
    pub region_template: String,
    /// Have every instance serve Prometheus metrics at ADDR (e.g. 127.0.0.1:9464); off by
    /// default. Several instances need one port each: see docs/host.md, "Metrics".
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `host vm-xml` arguments.
#[derive(Debug, Args)]
pub struct VmXmlArgs {
    /// The host unit's instance (`vgpu-host@<instance>.service`), usually the VM's name.
    #[arg(long)]
    pub instance: String,
    /// Region path per instance, as given to `host install` (`%i` = instance name).
    #[arg(long, default_value = paths::DEFAULT_REGION_TEMPLATE)]
    pub region_template: String,
    /// Region size (and so the guest's BAR): a power of two, bytes or with a K/M/G suffix.
    #[arg(long, default_value = "64M", value_parser = parse_size_arg)]
    pub size: u64,
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    run_cmd::parse_size(text).ok_or_else(|| format!("{text:?} is not a size (bytes, or K/M/G)"))
}

/// Runs a parsed command line; returns the exit status. Errors are printed as one line on `err`.
pub fn run(
    cli: Cli,
    runner: &mut dyn CommandRunner,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let root = Root::from_option(cli.root);
    let result: Result<i32, crate::Error> = match cli.command {
        Command::Install(a) => install::install(
            &root,
            runner,
            &install::InstallOptions {
                service: a.service,
                lib: a.lib,
                region: a.region,
                restart: a.restart,
                dry_run: a.dry_run,
            },
            out,
        )
        .map(|_| 0),
        Command::Verify(a) => {
            let list = verify::verify(
                &root,
                runner,
                &verify::VerifyOptions {
                    service: a.service,
                    lib: a.lib,
                },
            );
            list.print(a.json, out);
            if !a.json {
                install::print_recorded(runner, out);
            }
            Ok(i32::from(list.failed()))
        }
        Command::Uninstall(a) => uninstall::uninstall(
            &root,
            runner,
            &uninstall::UninstallOptions {
                service: a.service,
                restart: a.restart,
                dry_run: a.dry_run,
            },
            out,
        )
        .map(|_| 0),
        Command::Recover(a) => recover::recover(
            &root,
            runner,
            &recover::RecoverOptions {
                service: a.service,
                lib: a.lib,
                restart: a.restart,
                dry_run: a.dry_run,
            },
            out,
        )
        .map(|()| 0),
        Command::Status(a) => status::status(&root).map(|s| {
            status::print(&s, a.json, out);
            0
        }),
        Command::Doctor(a) => {
            let list = doctor::doctor(
                &root,
                &doctor::DoctorOptions {
                    service: a.service,
                    lib: a.lib,
                    region: a.region,
                },
            );
            list.print(a.json, out);
            Ok(i32::from(list.failed()))
        }
        Command::Host(HostCommand::Install(a)) => host_install::host_install(
            &root,
            runner,
            &host_install::HostInstallOptions {
                bin: a.bin,
                region_template: a.region_template,
                metrics: a.metrics,
                dry_run: a.dry_run,
            },
            out,
        )
        .map(|_| 0),
        Command::Host(HostCommand::TlsInit(a)) => crate::tls_init::tls_init(
            &crate::tls_init::TlsInitOptions {
                dir: a.dir,
                names: if a.names.is_empty() {
                    crate::tls_init::default_names()
                } else {
                    a.names
                },
            },
            out,
        )
        .map(|()| 0),
        Command::Host(HostCommand::VmXml(a)) => vm_xml::render(&vm_xml::VmXmlOptions {
            instance: a.instance.clone(),
            region_template: a.region_template,
            size: a.size,
        })
        .map(|xml| {
            write!(out, "{xml}").ok();
            if a.size != host_install::DEFAULT_REGION_SIZE {
                writeln!(
                    err,
                    "note: vgpu-host@{i}.service must serve {n} bytes: `systemctl edit vgpu-host@{i}.service`, add [Service] Environment=REGION_SIZE={n}",
                    i = a.instance,
                    n = a.size
                )
                .ok();
            }
            0
        })
        .map_err(crate::Error::from),
        Command::Run(a) => run_cmd::run(
            &run_cmd::RunOptions {
                region: a.target.region,
                host_bin: a.target.host_bin,
                shim: a.target.shim,
                nvml: run_cmd::Nvml::from_args(a.target.nvml, a.target.no_nvml),
                keep_host: a.keep_host,
                trace_summary: a.trace_summary,
                command: a.command,
            },
            err,
        ),
        Command::TraceSummary(a) => std::fs::read_to_string(&a.file)
            .map_err(|e| crate::Error::io("read", &a.file, e))
            .map(|text| {
                let window = a
                    .last_between
                    .as_deref()
                    .and_then(|f| trace_summary::Window::last_between(&text, f))
                    .unwrap_or(trace_summary::Window {
                        since: a.since,
                        until: a.until,
                    });
                let summary = trace_summary::Summary::of(&text, window);
                write!(out, "{}", summary.render(a.per.as_deref(), a.limit)).ok();
                0
            }),
        Command::Smi(a) if a.host => a
            .control
            .path()
            .and_then(|path| control_socket::read_report(&path))
            .map(|report| {
                smi::print_host_table(&report, out);
                0
            }),
        Command::Top(a) => {
            let interval = std::time::Duration::from_secs_f64(a.interval.clamp(0.05, 3600.0));
            a.control.path().and_then(|path| {
                if a.once {
                    top::once(&path, interval, out)
                } else {
                    top::live(&path, interval)
                }
            })
        }
        Command::Smi(a) => std::env::current_exe()
            .map_err(|e| crate::Error::io("find", "own executable", e))
            .and_then(|exe| {
                run_cmd::run(
                    &run_cmd::RunOptions {
                        region: a.target.region,
                        host_bin: a.target.host_bin,
                        shim: a.target.shim,
                        nvml: run_cmd::Nvml::from_args(a.target.nvml, a.target.no_nvml),
                        keep_host: false,
                        trace_summary: false,
                        command: vec![exe.into_os_string(), "smi-probe".into()],
                    },
                    err,
                )
            }),
        Command::SmiProbe => smi::probe().map(|gpus| {
            smi::print_table(&gpus, out);
            smi::print_processes(&smi::probe_processes(gpus.len()), out);
            0
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            writeln!(err, "vgpuctl: {e}").ok();
            1
        }
    }
}

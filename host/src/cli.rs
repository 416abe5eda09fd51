//! The `vgpu-host` command line: the serving supervisor (default) and the hidden `worker` mode
//! the supervisor re-executes itself in.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default region size: 64 MiB, of which [`DEFAULT_BULK`] is the bulk area.
pub const DEFAULT_REGION_SIZE: u64 = 64 << 20;
/// Bulk area of a default-sized region.
pub const DEFAULT_BULK: u64 = 32 << 20;
/// Default `--peer-timeout-ms`: the transport's default peer timeout.
pub const DEFAULT_PEER_TIMEOUT_MS: u64 = transport::DEFAULT_PEER_TIMEOUT.as_millis() as u64;
/// Default `--tcp-grace-ms`, of the supervisor and of its workers.
pub const DEFAULT_TCP_GRACE_MS: u64 = 2000;
/// Default `--max-clients`: client workers one host runs at once.
pub const DEFAULT_MAX_CLIENTS: usize = 64;
/// Default `--max-clients-per-region` and `--max-clients-per-listener`.
pub const DEFAULT_MAX_CLIENTS_PER_ORIGIN: usize = 64;
/// Default `--max-connections-per-client`: channels and connections (guest threads) of one
/// client at once.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;

/// Serves a vgpu region: guests' CUDA calls run here on the real driver.
#[derive(Debug, Parser)]
#[command(name = "vgpu-host", version, about, subcommand_negates_reqs = true)]
pub struct Cli {
    /// Serving options (ignored by the hidden `worker` mode).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Log level filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive);
    /// default from `VGPU_HOST_LOG`, then `RUST_LOG`, then `info`.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log: Option<String>,
    /// Internal modes.
    #[command(subcommand)]
    pub mode: Option<Mode>,
}

/// How waiters sleep (the region's doorbell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Doorbell {
    /// Futex wake-ups: host and guests on one kernel.
    Futex,
    /// Spin, yield, then back-off sleeps: across a VM boundary (ivshmem), no shared futexes.
    Poll,
}

/// Options of the serving supervisor.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Region file to create and serve (e.g. /dev/shm/vgpu, or a QEMU memory-backend file).
    /// Required unless `--listen` is given.
    #[arg(long, required_unless_present = "listen", value_name = "PATH")]
    pub region: Option<PathBuf>,
    /// Region size in bytes; the bulk area takes what the channels leave, and holds the guests'
    /// zero-copy pinned memory (`cuMemHostAlloc`), so size it for their pinned pools
    /// (`vgpuctl run` asks for 1 GiB; a tmpfs file only uses the pages touched). Default: the
    /// size of an existing file (e.g. an ivshmem backing file, which the guest sees at its own
    /// size and so must not change), else 64 MiB. A given size larger than an existing file is
    /// refused.
    #[arg(long, value_name = "BYTES")]
    pub region_size: Option<u64>,
    /// Channels (guest threads that may call at once).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub channels: u32,
    /// Doorbell mode.
    #[arg(long, value_enum, default_value_t = Doorbell::Futex)]
    pub doorbell: Doorbell,
    /// The real CUDA driver.
    #[arg(long, default_value = crate::driver::DEFAULT_DRIVER, value_name = "PATH")]
    pub driver: PathBuf,
    /// How long a silent peer is presumed alive before its calls fail, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_PEER_TIMEOUT_MS, value_name = "N")]
    pub peer_timeout_ms: u64,
    /// Keep one spare worker with the driver loaded and initialised for the next client.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub prewarm: bool,
    /// Contexts the spare worker creates ahead (device 0, default flags) and hands to the next
    /// client's `cuCtxCreate`, which otherwise costs ~100 ms; 0 turns it off. Each costs the GPU
    /// memory of one context while the spare waits.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub context_pool: u32,
    /// Write `ready\n` to this inherited file descriptor (then close it) instead of printing
    /// the ready line on stderr.
    #[arg(long, value_name = "FD")]
    pub ready_fd: Option<i32>,
    /// Leave the region file in place on exit even if this process created it.
    #[arg(long)]
    pub keep_region: bool,
    /// At most this many clients (guest processes, each with its own worker process) at once;
    /// a new client beyond it is refused (its connection closed, its claim left unserved, which
    /// the guest reports within the peer timeout) and logged. Bounds what one region or listener
    /// can make the host start.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENTS, value_name = "N")]
    pub max_clients: usize,
    /// At most this many of the clients may come through the region; a new one beyond it is
    /// refused (its first call fails with `CUDA_ERROR_OUT_OF_MEMORY`), the others go on.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENTS_PER_ORIGIN, value_name = "N")]
    pub max_clients_per_region: usize,
    /// At most this many of the clients may come through one `--listen` address; a new one
    /// beyond it is refused in the handshake (`CUDA_ERROR_OUT_OF_MEMORY`).
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENTS_PER_ORIGIN, value_name = "N")]
    pub max_clients_per_listener: usize,
    /// At most this many channels or TCP connections (guest threads) per client at once; the
    /// thread whose channel or connection is one too many gets `CUDA_ERROR_OUT_OF_MEMORY`, the
    /// client's other threads go on.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS_PER_CLIENT, value_name = "N")]
    pub max_connections_per_client: usize,
    /// Also serve guests over TCP on this address (e.g. 10.0.0.2:7300; port 0 picks a free
    /// port, shown in the ready line). Repeatable; works with or without `--region`. Needs TLS
    /// material (`--tls-cert`, `--tls-key`, `--tls-client-ca`), or `--tcp-cleartext`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<std::net::SocketAddr>,
    /// The host's TLS certificate chain (PEM), naming the addresses or DNS names guests reach
    /// it by (`vgpuctl host tls-init` makes one).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_client_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM; readable by its owner only).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_client_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs the guests' certificates: a TCP client without a certificate
    /// from it is refused in the TLS handshake.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve TCP in clear text, without TLS: calls, data and client tokens cross the network
    /// unencrypted (a trusted, private network only; logged as a warning). Needs `--tcp-key`
    /// or `--tcp-insecure`.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_client_ca"])]
    pub tcp_cleartext: bool,
    /// The pre-shared key TCP clients must prove they hold (a challenge answered with
    /// HMAC-SHA256; inside the TLS session, or the only check in clear text), from a file only
    /// its owner may read, at least 16 bytes; guests name the same file in
    /// `VGPU_HOST_KEY_FILE`.
    #[arg(long, value_name = "FILE")]
    pub tcp_key: Option<PathBuf>,
    /// With `--tcp-cleartext`: serve TCP clients without any authentication.
    #[arg(long, conflicts_with = "tcp_key", requires = "tcp_cleartext")]
    pub tcp_insecure: bool,
    /// The device memory each client's allocations may hold at once, in MiB (0: no quota).
    /// Allocations past it get `CUDA_ERROR_OUT_OF_MEMORY`; `cuMemGetInfo` and the NVML facade
    /// report the quota as the card's total.
    #[arg(long, default_value_t = 0, value_name = "MIB")]
    pub client_memory_mib: u64,
    /// The contexts each client's `cuCtxCreate` may hold at once (0: no quota); one past it gets
    /// `CUDA_ERROR_OUT_OF_MEMORY`. Primary contexts are not counted.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub client_contexts: usize,
    /// Serve Prometheus metrics (OpenMetrics text) at `http://ADDR/metrics`, e.g.
    /// 127.0.0.1:9464 (port 0 picks one, shown in the ready line): per-client memory,
    /// handles, calls, latency and bytes copied, and the host's workers and region.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Answer every connection to this Unix socket with the same data as one line of JSON
    /// (what `vgpuctl top` and `vgpuctl smi --host` read); mode 0600, removed on exit.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// How long a TCP client's worker waits, after its last connection closed, for a new one
    /// before it exits (freeing everything the client held on the GPU), in milliseconds.
    #[arg(long, default_value_t = DEFAULT_TCP_GRACE_MS, value_name = "N")]
    pub tcp_grace_ms: u64,
}

/// Internal modes.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// One client's worker process (started by the supervisor, never by hand).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Options of a worker process.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Region file (already created by the supervisor); absent when serving TCP only.
    #[arg(long, value_name = "PATH")]
    pub region: Option<PathBuf>,
    /// The real CUDA driver.
    #[arg(long, value_name = "PATH")]
    pub driver: PathBuf,
    /// The client id (assigned by the supervisor) of the client this worker serves; absent for
    /// a spare, which learns it on stdin.
    #[arg(long, value_name = "ID")]
    pub client_id: Option<u64>,
    /// Guest process id of the client.
    #[arg(long, default_value_t = 0, value_name = "P")]
    pub pid: u32,
    /// Guest process start time (clock ticks since boot, 0 = unknown).
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub start_time: u64,
    /// Load and initialise the driver before any client arrives.
    #[arg(long)]
    pub prewarm: bool,
    /// The client's device-memory quota in MiB (see the host's `--client-memory-mib`).
    #[arg(long, default_value_t = 0, value_name = "MIB")]
    pub client_memory_mib: u64,
    /// The client's context quota (see the host's `--client-contexts`).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub client_contexts: usize,
    /// Contexts to create ahead while prewarming (see the host's `--context-pool`).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub context_pool: u32,
    /// Inherited descriptor of the connection link (`stream_link.rs`); given when the host
    /// listens for TCP.
    #[arg(long, value_name = "FD")]
    pub link_fd: Option<i32>,
    /// Channels and connections the client may hold at once (see the host's
    /// `--max-connections-per-client`).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS_PER_CLIENT, value_name = "N")]
    pub max_connections: usize,
    /// The client (given with `--client-id`) connects over TCP.
    #[arg(long)]
    pub tcp_client: bool,
    /// See the host's `--tcp-grace-ms`.
    #[arg(long, default_value_t = DEFAULT_TCP_GRACE_MS, value_name = "N")]
    pub tcp_grace_ms: u64,
    /// Inherited descriptor of the counters block the supervisor reads (`accounting/`).
    #[arg(long, value_name = "FD")]
    pub stats_fd: Option<i32>,
    /// Inherited descriptor of the region's process list (`accounting/directory.rs`).
    #[arg(long, value_name = "FD")]
    pub directory_fd: Option<i32>,
}

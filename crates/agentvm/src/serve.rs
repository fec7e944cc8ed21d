//! `agentvm serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use agentvm_server::EventRetention;
use agentvm_server::{AllowedHost, Exposure, Origin};
use agentvm_server::{ServerConfig, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_MESSAGE_BYTES};
use agentvm_server::{
    DEFAULT_CREATES_PER_SECOND, DEFAULT_CREATE_BURST, DEFAULT_EVENT_QUEUE_BYTES, DEFAULT_EXEC_OUTPUT_BYTES,
    DEFAULT_MAX_ACTIONS_PER_CONNECTION, DEFAULT_MAX_VMS,
};
use anyhow::Context;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. A non-loopback address requires --token.
    #[arg(long, env = "AGENTVM_LISTEN", default_value = "127.0.0.1:6420")]
    listen: SocketAddr,
    /// Where VMs keep their files [default: /var/lib/agentvm as root, else ~/.local/share/agentvm]
    #[arg(long, env = "AGENTVM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Token clients must send (x-rivet-token, Authorization: Bearer, rvt-token or @token)
    #[arg(long, env = "AGENTVM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A web origin (scheme://host[:port], exactly as the browser's address bar shows it) whose
    /// pages may call this server; repeatable, or comma-separated in the variable. `*` is not
    /// accepted. Without it, requests from web pages are refused (programs send no Origin)
    #[arg(long = "allow-origin", value_name = "ORIGIN", env = "AGENTVM_ALLOW_ORIGIN", value_delimiter = ',')]
    #[allow(rustdoc::broken_intra_doc_links, reason = "clap's help text: `[:port]` is literal, not a link")]
    allow_origins: Vec<Origin>,
    /// A host name clients may reach this server under (the Host header), besides loopback names
    /// and the listen address; repeatable, or comma-separated in the variable
    #[arg(long = "allow-host", value_name = "NAME", env = "AGENTVM_ALLOW_HOST", value_delimiter = ',')]
    allow_hosts: Vec<AllowedHost>,
    /// Largest HTTP request body, in bytes
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Largest WebSocket message, in bytes
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Seconds without actions after which a VM with no running process and no open shell
    /// sleeps (its files stay; the next action wakes it)
    #[arg(long, env = "AGENTVM_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs_f64())]
    idle_timeout: f64,
    /// Most VMs (awake or asleep) this server holds; creating more fails (503 server/too_many_vms)
    #[arg(long, env = "AGENTVM_MAX_VMS", default_value_t = DEFAULT_MAX_VMS)]
    max_vms: u64,
    /// New VMs per second, after a burst of --create-burst (429 server/rate_limited); 0 = unlimited
    #[arg(long, env = "AGENTVM_MAX_CREATES_PER_SECOND", default_value_t = DEFAULT_CREATES_PER_SECOND)]
    max_creates_per_second: f64,
    /// VMs that may be created at once after a quiet period
    #[arg(long, default_value_t = DEFAULT_CREATE_BURST)]
    create_burst: u32,
    /// Output `exec` keeps per stream, in bytes (the rest is discarded; the result says truncated)
    #[arg(long, default_value_t = DEFAULT_EXEC_OUTPUT_BYTES)]
    max_exec_output_bytes: usize,
    /// Actions one WebSocket connection may have running at once
    #[arg(long, default_value_t = DEFAULT_MAX_ACTIONS_PER_CONNECTION)]
    max_actions_per_connection: usize,
    /// Events each VM's durable event log keeps (the oldest go first)
    #[arg(long, default_value_t = EventRetention::default().events, value_parser = clap::value_parser!(u64).range(1..))]
    event_log_events: u64,
    /// Payload bytes each VM's durable event log keeps (the oldest go first; the newest event always stays)
    #[arg(long, default_value_t = EventRetention::default().bytes)]
    event_log_bytes: u64,
    /// Bytes of events queued per WebSocket connection before output producers wait for it
    /// (a connection that stops reading for 1 s is then skipped and told so with `streamError`)
    #[arg(long, default_value_t = DEFAULT_EVENT_QUEUE_BYTES as u64, value_parser = clap::value_parser!(u64).range(65536..))]
    event_queue_bytes: u64,
    /// The config file (TOML): the VM preset of each actor name (limits, environment, network
    /// policy). Without one, every actor name gets the built-in VM. See the README.
    #[arg(long, env = "AGENTVM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// For tests: cron runs on a clock that starts at START (milliseconds since the Unix epoch,
    /// or an RFC 3339 time such as 2030-01-01T00:00:00Z) and moves only through
    /// `POST /debug/clock {"now": MS}` or `{"advanceMs": MS}`.
    #[arg(long, env = "AGENTVM_MANUAL_CLOCK", value_name = "START", value_parser = parse_start)]
    manual_clock: Option<u64>,
    /// Join the Rivet Engine at URL as a host of its pool --pool: the engine places VMs, routes
    /// clients to them and moves them between hosts (see docs/scale-out.md)
    #[arg(long, env = "AGENTVM_ENGINE", value_name = "URL")]
    engine: Option<String>,
    /// The engine pool (runner config) this host serves [default: default]
    #[arg(long, env = "AGENTVM_POOL", value_name = "NAME")]
    pool: Option<String>,
    /// The engine namespace [default: default]
    #[arg(long, env = "AGENTVM_ENGINE_NAMESPACE", value_name = "NAME")]
    engine_namespace: Option<String>,
    /// The token the engine requires of hosts
    #[arg(long, env = "AGENTVM_ENGINE_TOKEN", hide_env_values = true)]
    engine_token: Option<String>,
    /// This host's version in the pool (the engine gives new VMs to the highest) [default: 1]
    #[arg(long, env = "AGENTVM_ENGINE_VERSION")]
    engine_version: Option<u32>,
    /// Where VM state is snapshotted so another host can load it: s3://bucket[/prefix]
    /// (AWS_* variables: credentials, AWS_REGION, AWS_ENDPOINT for an S3-compatible server) or a
    /// directory every host shares
    #[arg(long, env = "AGENTVM_SNAPSHOT_STORE", value_name = "LOCATION")]
    snapshot_store: Option<String>,
    /// Seconds between snapshots of an awake VM (it is also snapshotted when it sleeps or
    /// moves) [default: 60]
    #[arg(long, env = "AGENTVM_SNAPSHOT_INTERVAL")]
    snapshot_interval: Option<f64>,
}

/// The engine options from the command line over the config file's `[engine]`.
fn engine_options(
    args: &ServeArgs,
    file: Option<agentvm_config::EngineSection>,
) -> anyhow::Result<Option<agentvm_server::EngineOptions>> {
    let file = file.unwrap_or_default();
    let Some(endpoint) = args.engine.clone().or(file.endpoint) else {
        anyhow::ensure!(
            args.snapshot_store.is_none() && args.pool.is_none(),
            "--pool and --snapshot-store need --engine (or `endpoint` in the config file's [engine])"
        );
        return Ok(None);
    };
    anyhow::ensure!(
        endpoint.starts_with("http://") || endpoint.starts_with("https://"),
        "--engine must be an http:// or https:// URL, not {endpoint:?}"
    );
    let snapshots = match args.snapshot_store.clone().or(file.snapshot_store) {
        Some(location) => Some(agentvm_server::SnapshotStore::open(&location)?),
        None => {
            tracing::warn!("no --snapshot-store: a VM that moves to another host starts there without its files");
            None
        }
    };
    let interval = match args.snapshot_interval {
        Some(seconds) => std::time::Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .context("--snapshot-interval must be a positive number of seconds")?,
        None => file
            .snapshot_interval_seconds
            .filter(|s| *s > 0)
            .map_or(agentvm_server::DEFAULT_SNAPSHOT_INTERVAL, std::time::Duration::from_secs),
    };
    Ok(Some(agentvm_server::EngineOptions {
        endpoint,
        pool: args.pool.clone().or(file.pool).unwrap_or_else(|| "default".into()),
        namespace: args.engine_namespace.clone().or(file.namespace).unwrap_or_else(|| "default".into()),
        token: args.engine_token.clone().filter(|t| !t.is_empty()),
        version: args.engine_version.or(file.version).unwrap_or(1),
        snapshots,
        snapshot_interval: interval,
    }))
}

/// `--manual-clock`'s START.
fn parse_start(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .ok_or_else(|| format!("{text:?} is neither milliseconds since the epoch nor an RFC 3339 time"))
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("AGENTVM_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    crate::fd_limit::raise();
    agentvm_server::limit_allocator_arenas();
    let data_dir = match args.data_dir.clone() {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    let (presets, engine_file) = match &args.config {
        Some(path) => {
            let (presets, engine) = agentvm_config::load_all(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(config = %path.display(), actors = ?presets.names(), "config loaded");
            (presets, engine)
        }
        None => (agentvm_actors::Presets::default(), None),
    };
    let engine = engine_options(&args, engine_file)?;
    let config = ServerConfig {
        presets: std::sync::Arc::new(presets),
        listen: args.listen,
        data_dir: data_dir.clone(),
        init_program: std::env::current_exe().context("finding the agentvm binary")?,
        token: args.token.filter(|t| !t.is_empty()),
        exposure: Exposure { allowed_origins: args.allow_origins, allowed_hosts: args.allow_hosts },
        max_body_bytes: args.max_body_bytes,
        max_message_bytes: args.max_message_bytes,
        idle_timeout: std::time::Duration::try_from_secs_f64(args.idle_timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .context("--idle-timeout must be a positive number of seconds")?,
        max_vms: args.max_vms,
        creates_per_second: Some(args.max_creates_per_second)
            .filter(|n| n.is_finite() && *n >= 0.0)
            .context("--max-creates-per-second must be a number from 0 (unlimited)")?,
        create_burst: args.create_burst,
        exec_output_bytes: args.max_exec_output_bytes,
        max_actions_per_connection: args.max_actions_per_connection.max(1),
        event_retention: EventRetention { events: args.event_log_events, bytes: args.event_log_bytes },
        event_queue_bytes: usize::try_from(args.event_queue_bytes).unwrap_or(usize::MAX),
        manual_clock: args.manual_clock,
        engine,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        // Installed before the server says it listens: a SIGTERM sent right after that line
        // must stop it cleanly (VMs, mounts, LXCFS), not kill it with the default action.
        let shutdown = shutdown_signal().context("installing the SIGTERM and SIGINT handlers")?;
        agentvm_server::serve(
            config,
            |address| {
                // A line scripts and tests can wait for (the port is useful with port 0).
                println!("agentvm listening on http://{address} (data in {})", data_dir.display());
                let _ = std::io::stdout().flush();
            },
            shutdown,
        )
        .await?;
        anyhow::Ok(())
    })
}

/// `--data-dir`'s default (also `agentvm agents`').
pub(crate) fn default_data_dir() -> anyhow::Result<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/agentvm"));
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("agentvm"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set: pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/agentvm"))
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on either signal.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

//! `ferry serve`, `ferry status` and `ferry runs`: the service's command-line side. Arguments
//! and the config file become a [`Service`]; status and history come from the running service
//! or, when it does not answer, from its store opened read-only.

use super::serve_fleets::ServedFleets;
use super::{runtime, AppError, Threads};
use crate::config::{Config, ConfigError, RawOptions};
use crate::model::mirror::Settings;
use crate::service::fleets::Fleets;
use crate::service::status::{now_ms, MirrorState, MirrorStatus, NodeStatus, RunDetail};
use crate::service::status::{view, MirrorView};
use crate::service::store::{Location, Node, Store};
use crate::service::Service;
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the service keeps its store and, by default, its caches.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The config file (mirrors, [serve] settings).
    #[arg(long, short = 'c', value_name = "FILE", env = "FERRY_CONFIG")]
    pub config: PathBuf,
    /// Listen address [default: serve.listen, else 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", env = "FERRY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory for the store (and caches) [default: serve.data_dir, else the platform data dir + /ferry].
    #[arg(long, value_name = "DIR", env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Syncs running at once [default: serve.workers, else the number of CPUs].
    #[arg(long, value_name = "N", env = "FERRY_WORKERS")]
    pub workers: Option<usize>,
    /// Cache directory [default: cache_dir in the file, else $FERRY_CACHE_DIR, else DATA_DIR/cache].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Print JSON (the API's document) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The mirror whose history to show.
    pub mirror: String,
    #[command(flatten)]
    pub service: ServiceArgs,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A loaded config with the command line's overrides applied.
struct Resolved {
    config: Config,
    data_dir: PathBuf,
}

fn resolve(args: &ServiceArgs) -> Result<Resolved, ConfigError> {
    let mut config = Config::load(&args.config, &RawOptions::default())?;
    if let Some(listen) = args.listen {
        config.serve.listen = listen;
    }
    let data_dir = match args
        .data_dir
        .clone()
        .or_else(|| config.serve.data_dir.clone())
    {
        Some(d) => d,
        None => dirs::data_dir().map(|d| d.join("ferry")).ok_or_else(|| {
            ConfigError(
                "no data directory: set serve.data_dir, --data-dir or FERRY_DATA_DIR".into(),
            )
        })?,
    };
    Ok(Resolved {
        data_dir: std::path::absolute(&data_dir).unwrap_or(data_dir),
        config,
    })
}

fn store_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("ferry.db")
}

/// The store: the PostgreSQL one the config names, else the SQLite file in the data dir.
fn store_location(resolved: &Resolved) -> Location {
    match &resolved.config.serve.store_url {
        Some(url) => Location::Postgres(url.clone()),
        None => Location::Sqlite(store_path(&resolved.data_dir)),
    }
}

/// This node's id: `serve.node_id`, else the host name and process id (unique, but new at
/// every start: name the nodes of a cluster so that a restarted node keeps its mirrors).
fn node_id(configured: Option<&str>) -> String {
    if let Some(id) = configured {
        return id.to_owned();
    }
    let host: String = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(48)
        .collect();
    let host = if host.is_empty() {
        "ferry".to_owned()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

/// The file `ferry serve` holds an exclusive `flock` on, in the data directory.
const LOCK_FILE: &str = "ferry-serve.lock";

/// `ferry serve`. Usage and config errors are `Err(ConfigError)` (exit 2); anything that goes
/// wrong while serving is an `anyhow` error (exit 1).
pub fn serve(args: &ServeArgs) -> Result<(), AppError> {
    let resolved = resolve(&args.service)?;
    let mut serve = resolved.config.serve.clone();
    if let Some(workers) = args.workers {
        if workers == 0 {
            return Err(ConfigError("--workers must be at least 1".into()).into());
        }
        serve.workers = workers;
    }
    // The same order as `ferry sync`: flag, file, environment, then the service's default.
    let cache_dir = args
        .cache_dir
        .clone()
        .or_else(|| resolved.config.cache_dir.clone())
        .or_else(|| {
            std::env::var_os("FERRY_CACHE_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| resolved.data_dir.join("cache"));
    let engine = Settings {
        cache_dir: std::path::absolute(&cache_dir).unwrap_or(cache_dir),
        timeout: resolved.config.timeout.unwrap_or(Settings::DEFAULT_TIMEOUT),
        progress: false,
    };
    runtime(Threads::Pool)?.block_on(async move {
        let _lock = lock_data_dir(&resolved.data_dir)?;
        let node = Node {
            id: node_id(serve.node_id.as_deref()),
            lease: serve.lease,
        };
        let store = Store::open(&store_location(&resolved), node).await?;
        let listen = serve.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (is another process using it? set serve.listen or --listen)"))?;
        // Fleets are discovered by the service: at start, every discover_interval, and when
        // a webhook names a repository not found yet.
        let codecommit = super::codecommit::api_for(&resolved.config.fleets).await;
        let fleets: Option<Arc<dyn Fleets>> = (!resolved.config.fleets.is_empty()).then(|| {
            Arc::new(ServedFleets::new(
                resolved.config.fleets.clone(),
                engine.cache_dir.clone(),
                codecommit,
            )) as Arc<dyn Fleets>
        });
        let service = Service::new(resolved.config.mirrors, fleets, serve, engine, store)?;
        crate::service::run(listener, service, shutdown_signal()).await
    })?;
    Ok(())
}

/// One service per data directory: a second one would requeue the first one's running syncs
/// as if it had crashed. The lock is held until the returned value is dropped.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!(
            "another ferry serve is already using the data directory {} ({errno}); stop it first, or give this one its own data_dir",
            data_dir.display()
        )
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop ferry with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

/// The address to reach the service at: its listen address, with a wildcard replaced by
/// loopback.
fn service_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        ip if ip.is_ipv6() => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", listen.port())
}

/// GETs a JSON document from the running service; `None` when it does not answer.
async fn from_service<T: serde::de::DeserializeOwned>(listen: SocketAddr, path: &str) -> Option<T> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .ok()?;
    let response = client
        .get(format!("{}{path}", service_url(listen)))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Whether a `ferry serve` holds the data directory ([`lock_data_dir`]): a shared lock on its
/// lock file cannot be had. The probe's lock is dropped at once; a `ferry serve` starting in
/// that instant is refused as if another one held the directory.
fn data_dir_in_use(data_dir: &std::path::Path) -> bool {
    let Ok(file) = std::fs::File::open(data_dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// Opens the store of a service that does not answer at `listen`, to show its last known
/// state. Read-only: the service may be alive all the same (listening elsewhere), and opening
/// the store for writing would migrate it and requeue the syncs it is running. A PostgreSQL
/// store is the whole cluster's, as current as any node's API.
async fn offline_store(resolved: &Resolved, listen: SocketAddr) -> anyhow::Result<Store> {
    let location = store_location(resolved);
    if let Location::Postgres(_) = location {
        eprintln!(
            "ferry: the service does not answer at {}; showing the cluster's store {}",
            service_url(listen),
            location.describe()
        );
        return Store::open_read_only(&location).await;
    }
    let data_dir = &resolved.data_dir;
    let path = store_path(data_dir);
    if !path.exists() {
        anyhow::bail!(
            "the service at this config does not answer and has no store at {} yet: start it with ferry serve --config ...",
            path.display()
        );
    }
    if data_dir_in_use(data_dir) {
        eprintln!(
            "ferry: a ferry serve holds {} but does not answer at {}; it may listen elsewhere (--listen); showing its store read-only ({})",
            data_dir.display(),
            service_url(listen),
            path.display()
        );
    } else {
        eprintln!(
            "ferry: the service does not answer; showing the last state recorded in {}",
            path.display()
        );
    }
    Store::open_read_only(&location).await
}

/// `ferry status`: exit 0 when nothing is failing or diverged.
pub fn status(args: &StatusArgs) -> Result<bool, AppError> {
    let resolved = resolve(&args.service)?;
    let listen = resolved.config.serve.listen;
    let verdict = runtime(Threads::One)?.block_on(async {
        let (mirrors, nodes): (Vec<MirrorStatus>, Vec<NodeStatus>) =
            match from_service::<Vec<MirrorView>>(listen, "/api/mirrors").await {
                Some(views) => (
                    views.into_iter().map(|v| v.status).collect(),
                    from_service(listen, "/api/nodes").await.unwrap_or_default(),
                ),
                None => {
                    let store = offline_store(&resolved, listen).await?;
                    (store.mirrors().await?, store.nodes().await?)
                }
            };
        if args.json {
            let now = now_ms();
            let views: Vec<MirrorView> = mirrors
                .iter()
                .cloned()
                .map(|status| view(status, now))
                .collect();
            super::print_out(&format!("{}\n", serde_json::to_string_pretty(&views)?))?;
        } else {
            let now = now_ms();
            super::print_out(&format!(
                "{}{}",
                crate::service::page::status_table(&mirrors, now),
                crate::service::page::nodes_line(&nodes, now)
            ))?;
        }
        anyhow::Ok(
            !mirrors
                .iter()
                .any(|m| matches!(m.state, MirrorState::Failing | MirrorState::Diverged)),
        )
    })?;
    Ok(verdict)
}

/// `ferry runs MIRROR`.
pub fn runs(args: &RunsArgs) -> Result<(), AppError> {
    let resolved = resolve(&args.service)?;
    // A fleet's members are known to the service, not to the file: `<fleet>/...` is asked.
    let member = resolved
        .config
        .fleets
        .iter()
        .any(|f| args.mirror.starts_with(&format!("{}/", f.name)));
    if !member
        && !resolved
            .config
            .mirrors
            .iter()
            .any(|m| m.mirror.name == args.mirror)
    {
        let known: Vec<&str> = resolved
            .config
            .mirrors
            .iter()
            .map(|m| m.mirror.name.as_str())
            .collect();
        return Err(AppError::Usage(ConfigError(format!(
            "no mirror named '{}' in {} (it has: {})",
            args.mirror,
            args.service.config.display(),
            known.join(", ")
        ))));
    }
    let listen = resolved.config.serve.listen;
    let limit = args.limit.clamp(1, 500);
    runtime(Threads::One)?.block_on(async {
        // A fleet member's name holds `/`: one path segment all the same.
        let name =
            percent_encoding::utf8_percent_encode(&args.mirror, percent_encoding::NON_ALPHANUMERIC);
        let path = format!("/api/mirrors/{name}/runs?limit={limit}");
        let runs: Vec<RunDetail> = match from_service(listen, &path).await {
            Some(runs) => runs,
            None => {
                offline_store(&resolved, listen)
                    .await?
                    .runs(&args.mirror, limit)
                    .await?
            }
        };
        if args.json {
            super::print_out(&format!("{}\n", serde_json::to_string_pretty(&runs)?))?;
        } else {
            super::print_out(&crate::service::page::runs_table(&runs, now_ms()))?;
        }
        anyhow::Ok(())
    })?;
    Ok(())
}

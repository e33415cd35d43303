//! The front ends: the command line (`sync`, `plan`), the service's commands (`serve`,
//! `status`, `runs`, in [`serve`]) and the Lambda runtime ([`lambda`]). Raw arguments and the
//! environment become validated configuration, a run, and an exit status; `main.rs` only turns
//! [`run`]'s result into the exit code.
//!
//! Architecture invariant: nothing imports `app`. It may import every other room.

use crate::config::{self, Config, ConfigError, RawOptions};
use crate::engine::report::RunReport;
use crate::engine::sync::{free_aside, run_mirror, Mode};
use crate::model::mirror::{Divergence, LfsMissing, LfsMode, Mirror, Prune, Settings};
use crate::model::refs::{is_plain_ref_name, Oid, RefMap};
use crate::model::remote::url_has_password;
use serve::{RunsArgs, ServeArgs, StatusArgs};
mod codecommit;
mod fleet;
pub mod lambda;
mod lambda_fleets;
pub mod serve;
mod serve_fleets;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use toml::Spanned;

/// Exit status when every selected ref is in sync on every destination.
pub const EXIT_OK: u8 = 0;
/// Exit status when any ref or destination failed or diverged.
pub const EXIT_FAILED: u8 = 1;
/// Exit status for usage and configuration errors.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Keeps Git repositories synchronized: incremental, safe, honest mirroring"
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr; no progress meters.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mirror SOURCE to each DEST (or every mirror of --config, or the named ones).
    #[command(after_help = SYNC_HELP)]
    Sync(SyncArgs),
    /// Show what `sync` would do, ref by ref; changes no destination (the cache is updated).
    #[command(after_help = SYNC_HELP)]
    Plan(SyncArgs),
    /// Run the always-on service: webhooks, polling, a durable queue, status page, metrics.
    Serve(ServeArgs),
    /// Every mirror's state, from the running service (or its store when it is down).
    /// Exits 1 when a mirror is failing or diverged.
    Status(StatusArgs),
    /// A mirror's sync history, newest first.
    Runs(RunsArgs),
    /// Fleets: every repository of a source, discovered (`ferry fleet list`).
    Fleet(fleet::FleetArgs),
    /// Run as an AWS Lambda function (what the container's bootstrap does when
    /// AWS_LAMBDA_RUNTIME_API is set); configured from the environment.
    Lambda,
}

const SYNC_HELP: &str = "\
Without --config: ferry sync [OPTIONS] SOURCE DEST...   (SOURCE/DEST default to $SRC_REPO/$DEST_REPO)
With --config:    ferry sync --config ferry.toml [MIRROR]...

Credentials (never on the command line): FERRY_SOURCE_USERNAME, FERRY_SOURCE_PASSWORD,
FERRY_DEST_USERNAME, FERRY_DEST_PASSWORD, FERRY_SSH_KEY, FERRY_KNOWN_HOSTS, FERRY_CA_FILE;
the classic names SRC_USER, SRC_PASS, DEST_USER, DEST_PASS are accepted too.

Exit status: 0 everything in sync; 1 a ref or destination failed or diverged; 2 usage or config error.";

#[derive(Debug, Args)]
struct SyncArgs {
    /// SOURCE DEST... without --config; mirror names with --config.
    args: Vec<String>,
    /// Read mirrors from this TOML file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Refs to mirror (git refspec glob, repeatable). Default: refs/heads/* and refs/tags/*.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Refs to leave out (repeatable), e.g. 'refs/pull/*'.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// What to do with a destination ref changed behind ferry's back.
    #[arg(long, value_enum, value_name = "POLICY")]
    divergence: Option<DivergenceArg>,
    /// Which destination refs missing from the source to delete.
    #[arg(long, value_enum, value_name = "POLICY")]
    prune: Option<PruneArg>,
    /// All refs of a destination update together or not at all.
    #[arg(long)]
    atomic: bool,
    /// List each destination again after the push and report what it holds then (one round
    /// trip more); by default the receiving server's own per-ref report is the outcome.
    #[arg(long)]
    verify: bool,
    /// Create local destination paths that do not exist (as bare repositories).
    #[arg(long)]
    create: bool,
    /// Carry Git LFS objects: auto (when the pushed commits point to any), true or false.
    #[arg(long, value_name = "auto|true|false", value_parser = parse_lfs)]
    lfs: Option<LfsMode>,
    /// A ref that needs an LFS object the source lacks: hold it back, or push it anyway.
    #[arg(long, value_enum, value_name = "POLICY")]
    lfs_missing: Option<LfsMissingArg>,
    /// Cache directory [default: $FERRY_CACHE_DIR, else the platform cache dir + /ferry].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Deadline for each git operation, e.g. 30s, 10m [default: 10m].
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Print one JSON document describing the run on stdout.
    #[arg(long)]
    json: bool,
    /// Sync only this ref, as a push event naming it would (repeatable): a full ref name, with
    /// the id the source now has when known (REF=ID, as a post-receive hook gets it). A cache
    /// that holds that id already fetches nothing; other refs are left alone. A ref outside a
    /// mirror's selection, or gone from the source, makes that mirror sync its whole selection.
    #[arg(long = "ref", value_name = "REF[=ID]", value_parser = parse_named_ref)]
    refs: Vec<NamedRef>,
}

/// One `--ref`: a full ref name and, when given and not the zero id of a deletion, the id the
/// source has now.
#[derive(Debug, Clone)]
struct NamedRef {
    name: String,
    id: Option<Oid>,
}

fn parse_named_ref(arg: &str) -> Result<NamedRef, String> {
    let (name, id) = match arg.split_once('=') {
        Some((name, id)) => (name, Some(id)),
        None => (arg, None),
    };
    if !is_plain_ref_name(name) {
        return Err(format!(
            "'{name}' is not a full ref name; give it as git stores it, e.g. refs/heads/main or refs/tags/v1.0"
        ));
    }
    let id = match id {
        None => None,
        Some(id) => {
            let oid = Oid::parse(&id.to_ascii_lowercase()).ok_or_else(|| {
                format!("'{id}' is not an object id; give the full id (40 or 64 hex digits), or only the ref name")
            })?;
            // A post-receive hook names a deleted ref with the zero id: nothing to claim.
            (!oid.as_str().bytes().all(|b| b == b'0')).then_some(oid)
        }
    };
    Ok(NamedRef {
        name: name.to_owned(),
        id,
    })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DivergenceArg {
    Keep,
    Overwrite,
    Abort,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LfsMissingArg {
    Hold,
    Push,
}

fn parse_lfs(text: &str) -> Result<LfsMode, String> {
    LfsMode::parse(text).ok_or_else(|| format!("'{text}': use auto, true or false"))
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PruneArg {
    Synced,
    All,
    Never,
}

/// Why ferry stops with a non-zero exit status.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad arguments: clap's own message.
    #[error("{0}")]
    Args(clap::Error),
    /// Bad configuration (exit 2): the message names the file, line or variable.
    #[error("{0}")]
    Usage(#[from] ConfigError),
    /// Something went wrong while running (exit 1).
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl AppError {
    /// Prints the failure on stderr and returns the exit code that goes with it.
    pub fn report(self) -> ExitCode {
        match self {
            AppError::Args(e) => {
                let _ = e.print();
                ExitCode::from(EXIT_USAGE)
            }
            AppError::Usage(e) => {
                eprintln!("ferry: {e}");
                ExitCode::from(EXIT_USAGE)
            }
            AppError::Failed(e) => {
                eprintln!("ferry: {e:#}");
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

/// Runs the command the arguments name. `Ok(true)`: everything in sync (exit 0); `Ok(false)`:
/// the command ran and its verdict is a failure, already reported (exit 1).
pub fn run() -> Result<bool, AppError> {
    // Lambda starts the container's bootstrap with no arguments.
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() && std::env::args_os().len() <= 1 {
        init_logging(1, false);
        return lambda::run();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not failures.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return Ok(true);
        }
        Err(e) => return Err(AppError::Args(e)),
    };
    // A service reports what it does; one-shot commands only what went wrong.
    let chatty = matches!(cli.command, Command::Serve(_) | Command::Lambda);
    init_logging(cli.verbose + u8::from(chatty), cli.quiet);
    let (mode, args) = match cli.command {
        Command::Sync(a) => (Mode::Sync, a),
        Command::Plan(a) => (Mode::Plan, a),
        Command::Serve(a) => return serve::serve(&a).map(|()| true),
        Command::Status(a) => return serve::status(&a),
        Command::Runs(a) => return serve::runs(&a).map(|()| true),
        Command::Fleet(c) => return fleet::run(&c),
        Command::Lambda => return lambda::run(),
    };
    if mode == Mode::Plan && !args.refs.is_empty() {
        return Err(ConfigError(
            "--ref narrows a sync; `ferry plan` always plans the whole selection (leave --ref out)"
                .into(),
        )
        .into());
    }
    let prepared = prepare(&args, cli.quiet)?;
    let settings = prepared.settings;
    let (report, fleets_ok) = runtime(Threads::One)?.block_on(async {
        let run = fleet::with_members(
            prepared.mirrors,
            &prepared.fleets,
            &prepared.names,
            &settings,
            mode,
        )
        .await?;
        let report = sync_mirrors(&run.mirrors, &settings, mode, &args.refs).await;
        let fleets_ok = run.finish(&prepared.fleets, &report).await;
        Ok::<_, AppError>((report, fleets_ok))
    })?;
    if args.json {
        let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        print_out(&format!("{json}\n"))?;
    } else {
        print_out(&report.render_human())?;
    }
    let ok = report.ok && fleets_ok;
    // The process exits next: a report of 10k refs is not worth freeing on the way out.
    free_aside(report);
    Ok(ok)
}

/// Writes a command's output to stdout. A reader that went away (`ferry sync | head -1`) is
/// no failure of the command: the rest is dropped quietly (`print!` would panic).
fn print_out(text: &str) -> Result<(), AppError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(AppError::Failed(anyhow::anyhow!(
            "cannot write the output: {e}"
        ))),
    }
}

/// How many threads a front end's runtime has.
#[derive(Debug, Clone, Copy)]
pub enum Threads {
    /// One-shot commands: everything on the calling thread.
    One,
    /// Long-running front ends (the service, Lambda): a small pool, so a slow request never
    /// stalls the others.
    Pool,
}

/// The one way the front ends build their tokio runtime.
pub fn runtime(threads: Threads) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::Pool => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs the mirrors, a few at a time (each has its own cache and lock), in the given order;
/// each only for the `named` refs when there are any (see [`SyncArgs::refs`]).
async fn sync_mirrors(
    mirrors: &[Mirror],
    settings: &Settings,
    mode: Mode,
    named: &[NamedRef],
) -> RunReport {
    use futures::stream::{self, StreamExt};
    let parallel = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let focus: Vec<String> = named.iter().map(|r| r.name.clone()).collect();
    // A ref named twice with different ids (or once without) claims nothing.
    let claimed: RefMap = named
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.id.clone()?)))
        .filter(|(name, id)| {
            named
                .iter()
                .all(|r| r.name != *name || r.id.as_ref() == Some(id))
        })
        .collect();
    let (focus, claimed) = (&focus, &claimed);
    let reports = stream::iter(
        mirrors
            .iter()
            .map(|m| run_mirror(m, settings, mode, focus, claimed)),
    )
    .buffered(parallel)
    .collect()
    .await;
    RunReport::new(mode == Mode::Plan, reports)
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("ferry={level}")));
    // Text for people at a terminal, JSON lines for log collectors everywhere else.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

/// What `sync` and `plan` run: validated mirrors (members of fleets are found later, by
/// discovery) and settings.
struct Prepared {
    mirrors: Vec<Mirror>,
    fleets: Vec<config::FleetSpec>,
    /// The mirror names the command line picked (none: all), and the file they are from.
    names: Names,
    settings: Settings,
}

/// Mirror names picked on the command line, checked once the fleets' members are known.
struct Names {
    picked: Vec<String>,
    config: PathBuf,
}

/// Turns raw arguments and the environment into validated mirrors and settings.
fn prepare(args: &SyncArgs, quiet: bool) -> Result<Prepared, ConfigError> {
    let overrides = RawOptions {
        include: (!args.include.is_empty()).then(|| spanned(&args.include)),
        exclude: (!args.exclude.is_empty()).then(|| spanned(&args.exclude)),
        divergence: args.divergence.map(|d| match d {
            DivergenceArg::Keep => Divergence::Keep,
            DivergenceArg::Overwrite => Divergence::Overwrite,
            DivergenceArg::Abort => Divergence::Abort,
        }),
        prune: args.prune.map(|p| match p {
            PruneArg::Synced => Prune::Synced,
            PruneArg::All => Prune::All,
            PruneArg::Never => Prune::Never,
        }),
        atomic: args.atomic.then_some(true),
        verify: args.verify.then_some(true),
        create: args.create.then_some(true),
        lfs: args.lfs,
        lfs_missing: args.lfs_missing.map(|m| match m {
            LfsMissingArg::Hold => LfsMissing::Hold,
            LfsMissingArg::Push => LfsMissing::Push,
        }),
        ..RawOptions::default()
    };
    let cli_timeout = args
        .timeout
        .as_deref()
        .map(config::parse_duration)
        .transpose()
        .map_err(|e| ConfigError(format!("--timeout: {e}")))?;

    let (mirrors, fleets, names, file_cache, file_timeout) = match &args.config {
        Some(path) => {
            let cfg = Config::load(path, &overrides)?;
            let all = cfg.mirrors.into_iter().map(|m| m.mirror).collect();
            let names = Names {
                picked: args.args.clone(),
                config: path.clone(),
            };
            (all, cfg.fleets, names, cfg.cache_dir, cfg.timeout)
        }
        None => {
            if !quiet {
                warn_about_passwords_in_arguments(&args.args);
            }
            let names = Names {
                picked: Vec::new(),
                config: PathBuf::new(),
            };
            (
                vec![config::adhoc_mirror(&args.args, &overrides)?],
                Vec::new(),
                names,
                None,
                None,
            )
        }
    };
    let cache_dir = cache_dir(args.cache_dir.clone(), file_cache)?;
    let settings = Settings {
        cache_dir,
        timeout: cli_timeout
            .or(file_timeout)
            .unwrap_or(Settings::DEFAULT_TIMEOUT),
        progress: !quiet && !args.json && std::io::stderr().is_terminal(),
    };
    Ok(Prepared {
        mirrors,
        fleets,
        names,
        settings,
    })
}

/// The cache directory of the one-shot commands: the flag, the file, `FERRY_CACHE_DIR`, then
/// the platform's cache directory.
fn cache_dir(flag: Option<PathBuf>, file: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    let dir = match flag
        .or(file)
        .or_else(|| config::env_nonempty("FERRY_CACHE_DIR").map(PathBuf::from))
    {
        Some(d) => d,
        None => dirs::cache_dir().map(|d| d.join("ferry")).ok_or_else(|| {
            ConfigError("no cache directory: pass --cache-dir or set FERRY_CACHE_DIR".into())
        })?,
    };
    Ok(std::path::absolute(&dir).unwrap_or(dir))
}

/// Says once that a password in a SOURCE or DEST URL on the command line is visible to other
/// users and stays in shell history, and how to pass it instead. Never shows the password.
fn warn_about_passwords_in_arguments(urls: &[String]) {
    let source = urls.first().is_some_and(|u| url_has_password(u));
    let dest = urls.iter().skip(1).any(|u| url_has_password(u));
    let place = match (source, dest) {
        (true, true) => "the SOURCE and DEST URLs",
        (true, false) => "the SOURCE URL",
        (false, true) => "a DEST URL",
        (false, false) => return,
    };
    eprintln!(
        "ferry: warning: a password in {place} on the command line is visible to other users \
         in `ps` and stays in your shell history; pass it in FERRY_SOURCE_PASSWORD / \
         FERRY_DEST_PASSWORD instead (the URL keeps the user name), or use a config file \
         (--config, with password_env or password_file)"
    );
}

fn spanned(values: &[String]) -> Vec<Spanned<String>> {
    values
        .iter()
        .map(|v| Spanned::new(0..0, v.clone()))
        .collect()
}

fn select_mirrors(all: Vec<Mirror>, names: &Names) -> Result<Vec<Mirror>, ConfigError> {
    let path = &names.config;
    let names = &names.picked;
    if names.is_empty() {
        return Ok(all);
    }
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| !all.iter().any(|m| &m.name == *n))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
        return Err(ConfigError(format!(
            "no mirror named {} in {} (it has: {})",
            unknown
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", "),
            path.display(),
            known.join(", ")
        )));
    }
    Ok(all
        .into_iter()
        .filter(|m| names.contains(&m.name))
        .collect())
}

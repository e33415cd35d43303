//! A real PostgreSQL server on loopback for the tests of ferry's Postgres store: Debian's
//! `postgresql` package, a fresh cluster (`initdb`) in a temp dir, trust authentication on
//! 127.0.0.1 only, one database per test ([`Postgres::create_database`]).
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
//! `postgres` user the Debian package creates (else `nobody`), through `setpriv`, in a data
//! directory that user owns. It can be stopped and started again on the same port and data
//! ([`Postgres::stop`], [`Postgres::start_again`]) to test clients across a restart.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::process::{
    free_ports, is_executable, output_with_timeout, run_checked, ServerProcess, Watchdog,
    READY_TIMEOUT,
};

/// The superuser `initdb` creates; clients connect as it without a password (trust, loopback).
pub const POSTGRES_USER: &str = "ferry";

/// A running PostgreSQL server, stopped (with its process group) on drop.
pub struct Postgres {
    // Field order matters: the server stops before the watchdog is disarmed and the temp dir
    // is deleted.
    server: Option<ServerProcess>,
    watchdog: Watchdog,
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    run_as: Option<String>,
    _root: TempDir,
}

impl Postgres {
    /// Creates a cluster in a temp dir and starts PostgreSQL on a free loopback port; returns
    /// once it answers queries.
    pub fn start() -> Result<Postgres> {
        let bin = bin_dir()?;
        let root = tempfile::Builder::new()
            .prefix("ferry-postgres-")
            .tempdir()
            .context("failed to create the PostgreSQL temp dir")?;
        let base = root.path().to_path_buf();
        let run_as = if nix::unistd::Uid::effective().is_root() {
            Some(server_user()?)
        } else {
            None
        };
        let data = base.join("data");
        let socket_dir = base.join("sockets");
        for dir in [&data, &socket_dir] {
            fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        if let Some(user) = &run_as {
            // The server's user must reach and own its directories.
            fs::set_permissions(&base, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("failed to open up {}", base.display()))?;
            run_checked(Command::new("chown").args(["-R", user]).arg(&base))?;
            fs::set_permissions(&data, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("failed to restrict {}", data.display()))?;
        }
        let mut initdb = as_user(run_as.as_deref(), &bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            POSTGRES_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let out = output_with_timeout(&mut initdb, Duration::from_secs(60))?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let [port] = free_ports::<1>()?;
        let log = base.join("postgres.log");
        let mut pg = Postgres {
            server: None,
            watchdog: Watchdog::start(&base)?,
            bin,
            data,
            socket_dir,
            log,
            port,
            run_as,
            _root: root,
        };
        pg.start_again()?;
        Ok(pg)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` (no password: trust authentication on loopback).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{POSTGRES_USER}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("invalid database name {name:?}: use letters, digits and _");
        }
        self.sql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Runs SQL with `psql` in `database`; returns its unaligned, tuples-only output.
    pub fn sql(&self, database: &str, sql: &str) -> Result<String> {
        run_checked(
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                ])
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    POSTGRES_USER,
                    "-d",
                    database,
                ])
                .args(["-c", sql]),
        )
    }

    /// Fast shutdown (`pg_ctl stop -m fast`: clients are disconnected, work is rolled back),
    /// waiting until the server has exited.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut server) = self.server.take() {
            if !server.interrupt_and_wait(Duration::from_secs(30)) {
                bail!(
                    "PostgreSQL did not shut down within 30 s; its log:{}",
                    server.logs()
                );
            }
        }
        Ok(())
    }

    /// Starts the server (again) on the same port and data; returns once it answers queries.
    pub fn start_again(&mut self) -> Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        let mut cmd = as_user(self.run_as.as_deref(), &self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.socket_dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
            ])
            // Tests kill ferry, never the machine: durability to disk is not under test.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        let server = ServerProcess::spawn(
            "postgres",
            cmd,
            &self.log,
            vec![self.log.clone()],
            &mut self.watchdog,
        )?;
        self.server = Some(server);
        self.wait_ready()
    }

    /// Waits until a query succeeds (the server accepts connections before it has recovered).
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(server) = self.server.as_mut() {
                server.ensure_running()?;
            }
            match self.sql("postgres", "SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!(
                        "PostgreSQL did not answer within {READY_TIMEOUT:?}"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
    }
}

/// The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/<version>/bin).
fn bin_dir() -> Result<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((version, e.path().join("bin")))
                })
                .filter(|(_, bin)| is_executable(&bin.join("postgres")))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).with_context(|| {
        "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/postgres); install \
         the Debian package `postgresql` — run scripts/test.sh (it installs test dependencies)"
    })
}

/// The user a root test run starts PostgreSQL as.
fn server_user() -> Result<String> {
    for name in ["postgres", "nobody"] {
        if nix::unistd::User::from_name(name).ok().flatten().is_some() {
            return Ok(name.to_owned());
        }
    }
    bail!("running as root and there is no `postgres` or `nobody` user to run PostgreSQL as")
}

/// `program`, run as `user` through `setpriv` when given, in a clean environment.
fn as_user(user: Option<&str>, program: &Path) -> Command {
    let mut cmd = match user {
        Some(user) => {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--init-groups",
                "--",
            ])
            .arg(program);
            cmd
        }
        None => Command::new(program),
    };
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C")
        .env("LC_ALL", "C")
        .current_dir("/");
    cmd
}

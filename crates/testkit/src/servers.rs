//! Real git servers on loopback: smart HTTP(S) (nginx + fcgiwrap +
//! git-http-backend), sshd and git daemon, all serving one repos directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::git::{check_output, git, git_binary, git_command};
use crate::process::{
    find_program, free_ports, is_executable, is_port_conflict, missing_program,
    output_with_timeout, read_logs, run_checked, stop_all, ServerProcess, Watchdog,
};

/// HTTP(S) user that may read and push.
pub const WRITER: (&str, &str) = ("writer", "writer-s3cret-pw");
/// HTTP(S) user that may read; a push gets HTTP 403 (not 401).
pub const READER: (&str, &str) = ("reader", "reader-s3cret-pw");

/// The user of the `/lfs-private/` LFS locations (see [`Servers::lfs_private_url`]): the
/// only one they let in, and one the git locations do not know.
pub const LFS_USER: (&str, &str) = ("lfs-bot", "lfs-bot-s3cret-pw");

/// Request body limit of the `/small/` location (see [`Servers::limited_http_url`]).
pub const SMALL_BODY_LIMIT: usize = 16 * 1024;

/// Environment variables read by the askpass script (see [`Servers::http_auth_env`]).
pub const ASKPASS_USER_VAR: &str = "FERRY_TESTKIT_HTTP_USER";
/// Environment variables read by the askpass script (see [`Servers::http_auth_env`]).
pub const ASKPASS_PASSWORD_VAR: &str = "FERRY_TESTKIT_HTTP_PASSWORD";

/// How often a server start is retried when its port was taken between
/// choosing it and the server binding it.
const PORT_ATTEMPTS: usize = 5;

/// Name of the throwaway repository used to prove every transport works
/// before [`Servers::start`] returns; deleted afterwards.
const PROBE_REPO: &str = "testkit-readiness-probe";

/// Upper bound for one readiness probe (`git ls-remote`); normally ~50 ms.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Programs every `Servers` needs, resolved up front so a missing one fails
/// fast with the Debian package to install.
struct Programs {
    nginx: PathBuf,
    fcgiwrap: PathBuf,
    sshd: PathBuf,
    ssh: PathBuf,
    ssh_keygen: PathBuf,
    openssl: PathBuf,
    git: PathBuf,
    http_backend: PathBuf,
}

impl Programs {
    fn find() -> Result<Programs> {
        let git = git_binary()?.to_path_buf();
        let exec_path = run_checked(Command::new(&git).arg("--exec-path"))
            .context("failed to ask git for its exec path")?;
        // Prefer the backend that belongs to the `git` we run, so client and
        // server speak the same git version.
        let http_backend = [
            Path::new(&exec_path).join("git-http-backend"),
            PathBuf::from("/usr/lib/git-core/git-http-backend"),
        ]
        .into_iter()
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            missing_program(
                "git-http-backend",
                &format!("looked in {exec_path} and /usr/lib/git-core"),
            )
        })?;
        Ok(Programs {
            nginx: find_program("nginx")?,
            fcgiwrap: find_program("fcgiwrap")?,
            sshd: find_program("sshd")?,
            ssh: find_program("ssh")?,
            ssh_keygen: find_program("ssh-keygen")?,
            openssl: find_program("openssl")?,
            git,
            http_backend,
        })
    }
}

/// The current (effective) user: nginx workers, sshd logins and the ssh URL
/// user all use it, so the servers can read and write the repos the tests
/// create.
struct CurrentUser {
    name: String,
    group: String,
    is_root: bool,
}

fn current_user() -> Result<CurrentUser> {
    use nix::unistd::{Gid, Group, Uid, User};
    let uid = Uid::effective();
    let user = User::from_uid(uid)
        .context("failed to look up the current user")?
        .with_context(|| format!("uid {uid} has no passwd entry (sshd needs one to log in)"))?;
    let group = Group::from_gid(user.gid)
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| Gid::effective().to_string());
    Ok(CurrentUser {
        name: user.name,
        group,
        is_root: uid.is_root(),
    })
}

/// Real git servers on loopback in a temp dir; everything is stopped and
/// deleted on drop.
///
/// Layout of [`Servers::root`]: `repos/` (served by every transport),
/// `http/` (nginx, fcgiwrap, TLS cert, htpasswd), `ssh/` (sshd config, keys,
/// known_hosts files), `daemon/` (git daemon log).
pub struct Servers {
    // Field order matters: processes are stopped before the watchdog is
    // disarmed and before the temp dir is deleted.
    processes: Vec<ServerProcess>,
    _watchdog: Watchdog,
    repos: PathBuf,
    http_port: u16,
    https_port: u16,
    ssh_port: u16,
    git_daemon_port: u16,
    user: String,
    ssh_program: PathBuf,
    ssh_key: PathBuf,
    known_hosts: PathBuf,
    wrong_known_hosts: PathBuf,
    empty_known_hosts: PathBuf,
    ca_file: PathBuf,
    askpass: PathBuf,
    root: TempDir,
}

impl Servers {
    /// Starts nginx+fcgiwrap (git http-backend, HTTP and HTTPS), sshd and git
    /// daemon, all serving [`Servers::repos_dir`], and returns once a real
    /// `git ls-remote` succeeded through every transport.
    pub fn start() -> Result<Servers> {
        let started = Instant::now();
        let programs = Programs::find()?;
        let user = current_user()?;
        let root = tempfile::Builder::new()
            .prefix("ferry-testkit-")
            .tempdir()
            .context("failed to create the servers' temp dir")?;
        // Canonical path: git daemon's whitelist and GIT_PROJECT_ROOT compare
        // real paths, and /tmp may be a symlink.
        let base = root
            .path()
            .canonicalize()
            .with_context(|| format!("failed to canonicalize {}", root.path().display()))?;
        for path in [base.as_path(), base.parent().unwrap_or(&base)] {
            if path
                .to_string_lossy()
                .contains(['"', '\'', ' ', ';', '$', '\\'])
            {
                bail!(
                    "temp dir path {} contains characters that would need quoting in \
                     server configs; set TMPDIR to a plain path",
                    path.display()
                );
            }
        }
        let repos = base.join("repos");
        let http_dir = base.join("http");
        let ssh_dir = base.join("ssh");
        let daemon_dir = base.join("daemon");
        for dir in [&repos, &http_dir, &ssh_dir, &daemon_dir] {
            fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }

        let mut watchdog = Watchdog::start(&base)?;
        let mut processes = Vec::new();

        // --- HTTP(S): fcgiwrap runs git-http-backend, nginx fronts it. ---
        let http = HttpFiles::create(&programs, &http_dir, &base)?;
        let sock = http_dir.join("fcgiwrap.sock");
        let fcgi_log = http_dir.join("fcgiwrap.log");
        let mut fcgiwrap = {
            let mut cmd = server_command(&programs.fcgiwrap);
            // -c: several workers, so concurrent clones/pushes do not queue.
            cmd.arg("-c")
                .arg("4")
                .arg("-s")
                .arg(format!("unix:{}", sock.display()));
            ServerProcess::spawn(
                "fcgiwrap",
                cmd,
                &fcgi_log,
                vec![fcgi_log.clone()],
                &mut watchdog,
            )?
        };
        fcgiwrap.wait_for_path(&sock)?;
        processes.push(fcgiwrap);

        let (nginx, http_port, https_port) = retry_on_port_conflict("nginx", || {
            let [http_port, https_port] = free_ports::<2>()?;
            let conf = http.write_nginx_conf(
                &http_dir, &repos, &sock, &programs, &user, http_port, https_port,
            )?;
            let stderr_log = http_dir.join("nginx-stderr.log");
            let error_log = http_dir.join("nginx-error.log");
            let mut cmd = server_command(&programs.nginx);
            cmd.arg("-p")
                .arg(format!("{}/", http_dir.display()))
                .arg("-e")
                .arg(&error_log)
                .arg("-c")
                .arg(&conf);
            let mut nginx = ServerProcess::spawn(
                "nginx",
                cmd,
                &stderr_log,
                vec![error_log, stderr_log.clone(), fcgi_log.clone()],
                &mut watchdog,
            )?;
            nginx.wait_for_port(http_port)?;
            nginx.wait_for_port(https_port)?;
            Ok((nginx, http_port, https_port))
        })?;
        processes.push(nginx);

        // --- sshd ---
        let ssh = SshFiles::create(&programs, &ssh_dir)?;
        let (sshd, ssh_port) = retry_on_port_conflict("sshd", || {
            let [port] = free_ports::<1>()?;
            ensure_privsep_dir();
            let conf = ssh.write_sshd_conf(&ssh_dir, &programs)?;
            let log = ssh_dir.join("sshd.log");
            let mut cmd = server_command(&programs.sshd);
            cmd.arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&conf)
                .arg("-p")
                .arg(port.to_string())
                .arg("-E")
                .arg(&log);
            let stdio_log = ssh_dir.join("sshd-stderr.log");
            let mut sshd = ServerProcess::spawn(
                "sshd",
                cmd,
                &stdio_log,
                vec![log, stdio_log.clone()],
                &mut watchdog,
            )?;
            sshd.wait_for_port(port)?;
            Ok((sshd, port))
        })?;
        processes.push(sshd);
        ssh.write_known_hosts(ssh_port)?;

        // --- git daemon ---
        let (daemon, git_daemon_port) = retry_on_port_conflict("git daemon", || {
            let [port] = free_ports::<1>()?;
            let log = daemon_dir.join("git-daemon.log");
            let mut cmd = git_command(&daemon_dir)?;
            cmd.arg("daemon")
                .arg("--reuseaddr")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", repos.display()))
                .arg("--export-all")
                .arg("--enable=receive-pack")
                .arg("--informative-errors")
                .arg("--verbose")
                .arg(&repos);
            let mut daemon =
                ServerProcess::spawn("git daemon", cmd, &log, vec![log.clone()], &mut watchdog)?;
            daemon.wait_for_port(port)?;
            Ok((daemon, port))
        })?;
        processes.push(daemon);

        let servers = Servers {
            processes,
            _watchdog: watchdog,
            repos,
            http_port,
            https_port,
            ssh_port,
            git_daemon_port,
            user: user.name,
            ssh_program: programs.ssh,
            ssh_key: ssh.client_key,
            known_hosts: ssh.known_hosts,
            wrong_known_hosts: ssh.wrong_known_hosts,
            empty_known_hosts: ssh.empty_known_hosts,
            ca_file: http.cert,
            askpass: http.askpass,
            root,
        };
        servers
            .probe()
            .with_context(|| format!("git servers in {} are not usable", base.display()))?;
        if std::env::var_os("FERRY_TESTKIT_VERBOSE").is_some() {
            eprintln!(
                "ferry-testkit: servers ready in {:?} under {}",
                started.elapsed(),
                base.display()
            );
        }
        Ok(servers)
    }

    /// Proves each transport end to end with `git ls-remote` on a throwaway
    /// repo; the error quotes the logs of the server that failed.
    fn probe(&self) -> Result<()> {
        self.create_bare(PROBE_REPO)?;
        let ca = format!("http.sslCAInfo={}", self.ca_file.display());
        let ssh_env = [("GIT_SSH_COMMAND", self.ssh_command(&self.known_hosts))];
        // (server whose logs explain a failure, url, git command)
        let mut checks = Vec::new();
        for (server, url) in [
            ("nginx", self.http_url(PROBE_REPO)),
            ("nginx", self.https_url(PROBE_REPO)),
            ("nginx", self.limited_http_url(PROBE_REPO)),
            ("sshd", self.ssh_url(PROBE_REPO)),
            ("git daemon", self.git_daemon_url(PROBE_REPO)),
        ] {
            let mut cmd = git_command(&self.repos)?;
            cmd.arg("-c").arg(&ca).arg("ls-remote").arg(&url);
            cmd.envs(self.http_auth_env(WRITER));
            cmd.envs(ssh_env.iter().map(|(k, v)| (k, v)));
            checks.push((server, url, cmd));
        }
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = checks
                .into_iter()
                .map(|(server, url, cmd)| {
                    scope.spawn(move || -> Result<()> {
                        let mut cmd = cmd;
                        output_with_timeout(&mut cmd, PROBE_TIMEOUT)
                            .and_then(|output| check_output(&cmd, output))
                            .map(drop)
                            .map_err(|e| {
                                let logs = self
                                    .processes
                                    .iter()
                                    .filter(|p| p.name() == server)
                                    .flat_map(|p| p.log_paths().to_vec())
                                    .collect::<Vec<_>>();
                                e.context(format!(
                                    "readiness probe via {url} failed; {server} logs:{}",
                                    read_logs(&logs)
                                ))
                            })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("readiness probe thread panicked")))
                })
                .collect()
        });
        for result in results {
            result?;
        }
        let probe = self.repo_path(PROBE_REPO);
        fs::remove_dir_all(&probe)
            .with_context(|| format!("failed to remove the probe repo {}", probe.display()))?;
        Ok(())
    }

    /// `<root>/repos`: every transport serves the bare repositories in here.
    pub fn repos_dir(&self) -> &Path {
        &self.repos
    }

    /// `git init --bare -b main repos/<name>.git`; returns its path. `name`
    /// may contain `/` for nested paths, but no `..` components.
    pub fn create_bare(&self, name: &str) -> Result<PathBuf> {
        validate_repo_name(name)?;
        let path = self.repo_path(name);
        if path.exists() {
            bail!("repository {} already exists", path.display());
        }
        fs::create_dir_all(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        git(&path, &["init", "-q", "--bare", "-b", "main", "."])?;
        Ok(path)
    }

    /// `repos/<name>.git` (whether or not it exists).
    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.repos.join(format!("{name}.git"))
    }

    /// `file:///abs/repos/<name>.git`
    pub fn file_url(&self, name: &str) -> String {
        format!("file://{}", self.repo_path(name).display())
    }

    /// `http://127.0.0.1:PORT/git/<name>.git`; Basic auth required for
    /// everything ([`WRITER`] may push, [`READER`] gets 403 on push).
    pub fn http_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/git/{name}.git", self.http_port)
    }

    /// `https://127.0.0.1:PORT/git/<name>.git`; self-signed cert, trust
    /// [`Servers::ca_file`] (e.g. `-c http.sslCAInfo=<ca_file>`).
    pub fn https_url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/git/{name}.git", self.https_port)
    }

    /// `http://127.0.0.1:PORT/lfs-private/<name>.git/info/lfs`: a Git LFS endpoint (once an
    /// [`crate::LfsServer`] runs) that only [`LFS_USER`] may use, with objects apart from
    /// those of the `/git/` endpoints.
    pub fn lfs_private_url(&self, name: &str) -> String {
        format!(
            "http://127.0.0.1:{}/lfs-private/{name}.git/info/lfs",
            self.http_port
        )
    }

    /// The socket nginx passes LFS requests to (see [`crate::LfsServer`]).
    pub fn lfs_socket(&self) -> PathBuf {
        self.root().join("http/giftless.sock")
    }

    /// nginx's log of LFS requests: `METHOD URI STATUS REQUEST_LENGTH "BODY"` (the body of
    /// batch requests, JSON-escaped).
    pub fn lfs_log(&self) -> PathBuf {
        self.root().join("http/lfs-access.log")
    }

    /// nginx's access log of every git request (combined format: one line per request, with
    /// its request line, e.g. `POST /git/<name>.git/git-upload-pack`), written as each request
    /// completes.
    pub fn http_access_log(&self) -> PathBuf {
        self.root().join("http/nginx-access.log")
    }

    /// `http://127.0.0.1:PORT/small/<name>.git`: same repos and users, but a
    /// 16 KiB request body limit, so larger pushes get HTTP 413.
    pub fn limited_http_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/small/{name}.git", self.http_port)
    }

    /// `ssh://USER@127.0.0.1:PORT/abs/repos/<name>.git` where USER is the
    /// user running the tests. Use with [`Servers::ssh_command`].
    pub fn ssh_url(&self, name: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.ssh_port,
            self.repo_path(name).display()
        )
    }

    /// `git://127.0.0.1:PORT/<name>.git` (receive-pack enabled, export-all).
    pub fn git_daemon_url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.git_daemon_port)
    }

    /// Port of the plain-HTTP nginx listener (`/git/` and `/small/`).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Port of the HTTPS nginx listener.
    pub fn https_port(&self) -> u16 {
        self.https_port
    }

    /// Port of sshd.
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    /// Port of git daemon.
    pub fn git_daemon_port(&self) -> u16 {
        self.git_daemon_port
    }

    /// Client private key (ed25519, no passphrase, mode 0600) authorised by sshd.
    pub fn ssh_key(&self) -> &Path {
        &self.ssh_key
    }

    /// known_hosts with sshd's real host key for `[127.0.0.1]:PORT`.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// known_hosts listing a different key for `[127.0.0.1]:PORT`, as if the
    /// host key had changed (ssh: "REMOTE HOST IDENTIFICATION HAS CHANGED").
    pub fn wrong_known_hosts(&self) -> &Path {
        &self.wrong_known_hosts
    }

    /// An empty known_hosts file (host key unknown).
    pub fn empty_known_hosts(&self) -> &Path {
        &self.empty_known_hosts
    }

    /// PEM of the self-signed certificate for 127.0.0.1 (SAN IP:127.0.0.1).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The temp dir holding repos, configs, keys and logs.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A `GIT_SSH_COMMAND` value (absolute paths, no user config) that logs in
    /// with [`Servers::ssh_key`], strictly checking the host key against
    /// `known_hosts` (pass one of the three known_hosts files).
    pub fn ssh_command(&self, known_hosts: &Path) -> String {
        [
            shell_quote(&self.ssh_program.to_string_lossy()),
            "-F /dev/null".into(),
            "-o BatchMode=yes".into(),
            "-o IdentitiesOnly=yes".into(),
            "-o StrictHostKeyChecking=yes".into(),
            "-o GlobalKnownHostsFile=/dev/null".into(),
            format!(
                "-o UserKnownHostsFile={}",
                shell_quote(&known_hosts.to_string_lossy())
            ),
            "-o ConnectTimeout=10".into(),
            format!("-i {}", shell_quote(&self.ssh_key.to_string_lossy())),
        ]
        .join(" ")
    }

    /// Environment that makes git answer HTTP Basic auth prompts with `creds`
    /// via a `GIT_ASKPASS` script, keeping the password out of URLs and argv.
    pub fn http_auth_env(&self, creds: (&str, &str)) -> Vec<(String, String)> {
        vec![
            (
                "GIT_ASKPASS".to_string(),
                self.askpass.to_string_lossy().into_owned(),
            ),
            (ASKPASS_USER_VAR.to_string(), creds.0.to_string()),
            (ASKPASS_PASSWORD_VAR.to_string(), creds.1.to_string()),
        ]
    }

    /// The `GIT_ASKPASS` script used by [`Servers::http_auth_env`]: prints
    /// `$FERRY_TESTKIT_HTTP_USER` / `$FERRY_TESTKIT_HTTP_PASSWORD`.
    pub fn askpass(&self) -> &Path {
        &self.askpass
    }

    /// The (tail of the) log files of all servers, for debugging a failing test.
    pub fn logs(&self) -> String {
        let paths: Vec<PathBuf> = self
            .processes
            .iter()
            .flat_map(|p| p.log_paths().to_vec())
            .chain(std::iter::once(self.http_access_log()))
            .collect();
        read_logs(&paths)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // Stop all servers concurrently; field drops then disarm the
        // watchdog and delete the temp dir.
        stop_all(&mut self.processes);
    }
}

fn validate_repo_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        bail!("invalid repository name {name:?}: use relative names like \"app\" or \"org/app\"");
    }
    Ok(())
}

/// Single-quotes `s` for `sh` if it contains anything special.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A command for a server daemon with a clean environment, so nothing from
/// the test process (`GIT_DIR`, proxies, `GIT_SSL_CAINFO`, ...) leaks into
/// the servers or the git processes they spawn.
fn server_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        )
        .env("LANG", "C")
        .env("LC_ALL", "C");
    cmd
}

/// Starts a server, retrying with fresh ports when the chosen port was taken
/// by someone else in the meantime.
fn retry_on_port_conflict<T>(name: &str, mut start: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match start() {
            Ok(v) => return Ok(v),
            Err(e) if attempt < PORT_ATTEMPTS && is_port_conflict(&e) => attempt += 1,
            Err(e) => return Err(e.context(format!("failed to start {name}"))),
        }
    }
}

/// sshd insists on its privilege separation directory existing, and it is
/// missing in fresh containers (normally created by the init script). Only
/// root can create it; otherwise sshd's own error (in its log) explains.
fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    if !dir.exists() && fs::create_dir_all(dir).is_ok() {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    }
}

/// Files for the HTTP(S) side: TLS certificate, htpasswd, askpass helper.
struct HttpFiles {
    cert: PathBuf,
    key: PathBuf,
    htpasswd: PathBuf,
    lfs_htpasswd: PathBuf,
    askpass: PathBuf,
}

impl HttpFiles {
    fn create(programs: &Programs, dir: &Path, root: &Path) -> Result<HttpFiles> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        // EC key: generated in milliseconds, unlike RSA.
        run_checked(
            Command::new(&programs.openssl)
                .args(["req", "-x509", "-newkey", "ec"])
                .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .args(["-days", "3650", "-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"]),
        )
        .context("failed to generate the self-signed TLS certificate")?;

        let mut htpasswd = String::new();
        for (user, password) in [WRITER, READER] {
            let hash = run_checked(
                Command::new(&programs.openssl)
                    .args(["passwd", "-apr1"])
                    .arg(password),
            )
            .context("failed to hash an htpasswd password")?;
            htpasswd.push_str(&format!("{user}:{hash}\n"));
        }
        let htpasswd_path = dir.join("htpasswd");
        fs::write(&htpasswd_path, htpasswd)
            .with_context(|| format!("failed to write {}", htpasswd_path.display()))?;
        let lfs_hash = run_checked(
            Command::new(&programs.openssl)
                .args(["passwd", "-apr1"])
                .arg(LFS_USER.1),
        )
        .context("failed to hash an htpasswd password")?;
        let lfs_htpasswd = dir.join("lfs-htpasswd");
        fs::write(&lfs_htpasswd, format!("{}:{lfs_hash}\n", LFS_USER.0))
            .with_context(|| format!("failed to write {}", lfs_htpasswd.display()))?;

        let askpass = root.join("askpass.sh");
        let script = format!(
            "#!/bin/sh\n# GIT_ASKPASS helper: git passes the prompt as $1.\n\
             case \"$1\" in\n  Username*) printf '%s\\n' \"${ASKPASS_USER_VAR}\" ;;\n  \
             *) printf '%s\\n' \"${ASKPASS_PASSWORD_VAR}\" ;;\nesac\n"
        );
        fs::write(&askpass, script)
            .with_context(|| format!("failed to write {}", askpass.display()))?;
        fs::set_permissions(&askpass, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("failed to chmod {}", askpass.display()))?;
        Ok(HttpFiles {
            cert,
            key,
            htpasswd: htpasswd_path,
            lfs_htpasswd,
            askpass,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn write_nginx_conf(
        &self,
        dir: &Path,
        repos: &Path,
        sock: &Path,
        programs: &Programs,
        user: &CurrentUser,
        http_port: u16,
        https_port: u16,
    ) -> Result<PathBuf> {
        let d = dir.display();
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
        // Workers must run as the test user to read/write repos and reach the
        // fcgiwrap socket; `user` is only allowed (and needed) as root.
        let user_line = if user.is_root {
            format!("user {} {};", user.name, user.group)
        } else {
            String::new()
        };
        let git_dir = programs
            .git
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/usr/bin".into());
        let fastcgi = format!(
            r#"# git-http-backend via fcgiwrap (see `man git-http-backend`).
fastcgi_pass unix:{sock};
fastcgi_param SCRIPT_FILENAME {backend};
fastcgi_param GIT_PROJECT_ROOT {repos};
fastcgi_param GIT_HTTP_EXPORT_ALL 1;
fastcgi_param GIT_CONFIG_NOSYSTEM 1;
fastcgi_param GIT_CONFIG_GLOBAL /dev/null;
fastcgi_param HOME {d};
fastcgi_param PATH {git_dir}:/usr/local/bin:/usr/bin:/bin;
fastcgi_param PATH_INFO $1;
# git-http-backend enables receive-pack only when REMOTE_USER is non-empty,
# so mapping every user except the writer to "" makes it answer 403.
fastcgi_param REMOTE_USER $git_push_user;
fastcgi_param REMOTE_ADDR $remote_addr;
fastcgi_param QUERY_STRING $query_string;
fastcgi_param REQUEST_METHOD $request_method;
fastcgi_param CONTENT_TYPE $content_type;
fastcgi_param CONTENT_LENGTH $content_length;
fastcgi_param REQUEST_URI $request_uri;
fastcgi_param SCRIPT_NAME $uri;
fastcgi_param SERVER_PROTOCOL $server_protocol;
fastcgi_param GATEWAY_INTERFACE CGI/1.1;
fastcgi_param SERVER_NAME $server_name;
fastcgi_param SERVER_PORT $server_port;
fastcgi_param HTTPS $https if_not_empty;
"#,
            sock = sock.display(),
            backend = programs.http_backend.display(),
            repos = repos.display(),
        );
        let fastcgi_conf = dir.join("git-fastcgi.conf");
        fs::write(&fastcgi_conf, fastcgi)
            .with_context(|| format!("failed to write {}", fastcgi_conf.display()))?;

        let conf = format!(
            r#"# Generated by ferry-testkit.
daemon off;
master_process on;
worker_processes 1;
{user_line}
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;

events {{
    worker_connections 512;
}}

http {{
    access_log {d}/nginx-access.log;
    client_body_temp_path {d}/tmp/client_body;
    fastcgi_temp_path {d}/tmp/fastcgi;
    proxy_temp_path {d}/tmp/proxy;
    scgi_temp_path {d}/tmp/scgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    default_type application/octet-stream;
    server_tokens off;
    client_body_buffer_size 1m;
    fastcgi_read_timeout 600s;
    fastcgi_send_timeout 600s;

    map $remote_user $git_push_user {{
        "{writer}" "{writer}";
        default "";
    }}

    # Git LFS (giftless, started on demand by LfsServer, behind the same Basic auth): nginx
    # authenticates the batch request and hands giftless a token with the user's rights; the
    # transfer URLs giftless answers with carry tokens of their own.
    map $remote_user $lfs_token {{
        "{writer}" "Bearer {write_token}";
        "{lfs_user}" "Bearer {write_token}";
        "{reader}" "Bearer {read_token}";
        default "";
    }}
    upstream giftless {{
        server unix:{d}/giftless.sock;
    }}
    log_format lfs escape=json '$request_method $uri $status $request_length "$request_body"';
    log_format lfs_transfer '$request_method $uri $status $request_length "-"';

    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        server_name 127.0.0.1;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;

        auth_basic "ferry-testkit";
        auth_basic_user_file {htpasswd};

        location ~ ^/git/.+\.git/info/lfs/objects/batch$ {{
            {lfs_proxy}
        }}

        location ~ ^/lfs-private/.+\.git/info/lfs/objects/batch$ {{
            auth_basic_user_file {lfs_htpasswd};
            {lfs_proxy}
        }}

        location ~ ^/(git|lfs-private)/.+\.git/info/lfs/objects/storage {{
            auth_basic off;
            client_max_body_size 0;
            proxy_request_buffering off;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_pass http://giftless;
            access_log {d}/lfs-access.log lfs_transfer;
        }}

        location ~ ^/git(/.*)$ {{
            client_max_body_size 0;
            include {fastcgi_conf};
        }}

        location ~ ^/small(/.*)$ {{
            client_max_body_size {small};
            include {fastcgi_conf};
        }}

        location / {{
            return 404;
        }}
    }}
}}
"#,
            writer = WRITER.0,
            reader = READER.0,
            lfs_user = LFS_USER.0,
            write_token = crate::lfs::token(&["obj:*"]),
            read_token = crate::lfs::token(&["obj:*:read"]),
            lfs_htpasswd = self.lfs_htpasswd.display(),
            lfs_proxy = format!(
                "proxy_set_header Authorization $lfs_token;\n            \
                 proxy_set_header Host $http_host;\n            \
                 proxy_set_header X-Forwarded-Proto $scheme;\n            \
                 proxy_pass http://giftless;\n            \
                 access_log {d}/lfs-access.log lfs;"
            ),
            cert = self.cert.display(),
            key = self.key.display(),
            htpasswd = self.htpasswd.display(),
            fastcgi_conf = fastcgi_conf.display(),
            small = SMALL_BODY_LIMIT,
        );
        let path = dir.join("nginx.conf");
        fs::write(&path, conf).with_context(|| format!("failed to write {}", path.display()))?;
        Ok(path)
    }
}

/// Files for the ssh side: host key, client key, known_hosts variants.
struct SshFiles {
    host_key: PathBuf,
    client_key: PathBuf,
    authorized_keys: PathBuf,
    other_host_key: PathBuf,
    known_hosts: PathBuf,
    wrong_known_hosts: PathBuf,
    empty_known_hosts: PathBuf,
}

impl SshFiles {
    fn create(programs: &Programs, dir: &Path) -> Result<SshFiles> {
        let keygen = |path: &Path, comment: &str| -> Result<()> {
            run_checked(
                Command::new(&programs.ssh_keygen)
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                    .arg(path),
            )
            .with_context(|| format!("failed to generate ssh key {}", path.display()))?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("failed to chmod {}", path.display()))
        };
        let host_key = dir.join("ssh_host_ed25519_key");
        let other_host_key = dir.join("other_host_ed25519_key");
        let client_key = dir.join("client_ed25519");
        keygen(&host_key, "ferry-testkit-host")?;
        keygen(&other_host_key, "ferry-testkit-other-host")?;
        keygen(&client_key, "ferry-testkit-client")?;
        let authorized_keys = dir.join("authorized_keys");
        let client_pub = pub_path(&client_key);
        fs::copy(&client_pub, &authorized_keys).with_context(|| {
            format!(
                "failed to copy {} to {}",
                client_pub.display(),
                authorized_keys.display()
            )
        })?;
        let empty_known_hosts = dir.join("known_hosts.empty");
        fs::write(&empty_known_hosts, "")
            .with_context(|| format!("failed to write {}", empty_known_hosts.display()))?;
        Ok(SshFiles {
            host_key,
            client_key,
            authorized_keys,
            other_host_key,
            known_hosts: dir.join("known_hosts"),
            wrong_known_hosts: dir.join("known_hosts.wrong"),
            empty_known_hosts,
        })
    }

    fn write_sshd_conf(&self, dir: &Path, programs: &Programs) -> Result<PathBuf> {
        let git_dir = programs
            .git
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/usr/bin".into());
        let conf = format!(
            r#"# Generated by ferry-testkit. Port is given with -p.
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
MaxStartups 100:30:200
MaxSessions 100
# Protocol v2 negotiation over ssh, and a hermetic git on the server side.
AcceptEnv GIT_PROTOCOL
SetEnv GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null PATH={git_dir}:/usr/local/bin:/usr/bin:/bin
"#,
            host_key = self.host_key.display(),
            dir = dir.display(),
            authorized_keys = self.authorized_keys.display(),
        );
        let path = dir.join("sshd_config");
        fs::write(&path, conf).with_context(|| format!("failed to write {}", path.display()))?;
        Ok(path)
    }

    fn write_known_hosts(&self, port: u16) -> Result<()> {
        for (key, out) in [
            (&self.host_key, &self.known_hosts),
            (&self.other_host_key, &self.wrong_known_hosts),
        ] {
            let pub_key = pub_path(key);
            let text = fs::read_to_string(&pub_key)
                .with_context(|| format!("failed to read {}", pub_key.display()))?;
            // "<type> <base64> <comment>" -> "[127.0.0.1]:PORT <type> <base64>"
            let mut fields = text.split_whitespace();
            let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
                bail!("unexpected public key format in {}", pub_key.display());
            };
            fs::write(out, format!("[127.0.0.1]:{port} {kind} {blob}\n"))
                .with_context(|| format!("failed to write {}", out.display()))?;
        }
        Ok(())
    }
}

fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

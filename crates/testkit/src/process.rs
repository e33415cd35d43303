//! Locating required programs and supervising long-running server processes.
//!
//! Every server runs in its own process group so that a single `killpg` also
//! reaches the helpers it forks (nginx workers, fcgiwrap's git-http-backend
//! children, git daemon's per-connection children). A small shell "watchdog"
//! additionally kills those groups if the test process dies without running
//! destructors (panic=abort, `std::process::exit`, a `static` that is never
//! dropped, SIGKILL), so a crashed test run leaves no stray daemons behind.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Directories searched after `$PATH`: daemons such as nginx and sshd live in
/// `sbin` directories that are usually not on a non-root user's `PATH`.
const EXTRA_BIN_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// How long a server may take to accept connections before we give up.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum number of bytes of each log file quoted in an error message.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// The Debian package that provides `program`, for actionable error messages.
fn debian_package(program: &str) -> &'static str {
    match program {
        "nginx" => "nginx-light",
        "fcgiwrap" => "fcgiwrap",
        "sshd" => "openssh-server",
        "ssh" | "ssh-keygen" => "openssh-client",
        "openssl" => "openssl",
        "git" | "git-http-backend" => "git",
        _ => "(unknown package)",
    }
}

/// The error returned when a required program is not installed.
pub(crate) fn missing_program(program: &str, looked_in: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "required program `{program}` not found ({looked_in}); install the Debian package `{}` \
         — run scripts/test.sh (it installs test dependencies)",
        debian_package(program)
    )
}

/// Finds `program` on `$PATH` or in the usual `sbin`/`bin` directories.
pub(crate) fn find_program(program: &str) -> Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = path_dirs
        .into_iter()
        .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from));
    for dir in candidates {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(missing_program(
        program,
        &format!("searched $PATH and {}", EXTRA_BIN_DIRS.join(", ")),
    ))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs a short-lived helper command to completion; the error carries its
/// stderr and stdout so a failing `openssl`/`ssh-keygen` call explains itself.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<String> {
    let description = describe_command(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {description}"))?;
    if !output.status.success() {
        bail!(
            "{description} failed ({}):\nstderr:\n{}\nstdout:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end(),
            String::from_utf8_lossy(&output.stdout).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Runs `cmd` (in its own process group) and collects its output, killing
/// the whole group if it takes longer than `timeout`, so a hung server turns
/// into an error instead of a hung test run.
pub(crate) fn output_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> Result<std::process::Output> {
    let description = describe_command(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("failed to run {description}"))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("failed to wait for {description}"))?
        {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Also reaps helpers such as ssh that would keep the pipes open.
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let status = match status {
        Some(status) => status,
        None => {
            let _ = child.wait();
            bail!("{description} did not finish within {timeout:?}");
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// A human-readable rendering of a command line for error messages.
pub(crate) fn describe_command(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    format!("`{}`", parts.join(" "))
}

/// Returns the last [`LOG_TAIL_BYTES`] of each log file, labelled, for
/// inclusion in an error message.
pub(crate) fn read_logs(logs: &[PathBuf]) -> String {
    let mut out = String::new();
    for log in logs {
        out.push_str(&format!("\n----- {} -----\n", log.display()));
        match tail(log) {
            Ok(text) if text.trim().is_empty() => out.push_str("(empty)\n"),
            Ok(text) => {
                out.push_str(&text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
            Err(e) => out.push_str(&format!("(could not read: {e})\n")),
        }
    }
    out
}

fn tail(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut prefix = String::new();
    if len > LOG_TAIL_BYTES {
        file.seek(SeekFrom::Start(len - LOG_TAIL_BYTES))?;
        prefix = format!("[... {} earlier bytes omitted ...]\n", len - LOG_TAIL_BYTES);
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(prefix + &String::from_utf8_lossy(&bytes))
}

/// Asks the kernel for a currently free loopback port.
///
/// The port is released before the server binds it, so another process may
/// grab it in between; callers retry on "Address already in use".
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N]> {
    // Keep all listeners open until every port is chosen so they are distinct.
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in ports.iter_mut() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("failed to bind 127.0.0.1:0 to find a free port")?;
        *port = listener
            .local_addr()
            .context("failed to read the local address of a probe listener")?
            .port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// Whether a startup error looks like a lost race for a port, in which case
/// the server is restarted on a different port.
pub(crate) fn is_port_conflict(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    text.contains("Address already in use") || text.contains("address already in use")
}

/// A long-running server child process, killed (with its whole process
/// group) on drop.
pub(crate) struct ServerProcess {
    name: String,
    child: Child,
    logs: Vec<PathBuf>,
    stopped: bool,
}

impl ServerProcess {
    /// Spawns `cmd` in a new process group with stdout and stderr appended to
    /// `stdio_log`. `logs` lists every file worth quoting if the server fails
    /// (it should include `stdio_log`).
    pub(crate) fn spawn(
        name: &str,
        mut cmd: Command,
        stdio_log: &Path,
        logs: Vec<PathBuf>,
        watchdog: &mut Watchdog,
    ) -> Result<ServerProcess> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(stdio_log)
            .with_context(|| format!("failed to create log file {}", stdio_log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("failed to duplicate log file {}", stdio_log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let description = describe_command(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {name}: {description}"))?;
        let process = ServerProcess {
            name: name.to_string(),
            child,
            logs,
            stopped: false,
        };
        watchdog.register(process.child.id())?;
        Ok(process)
    }

    /// The log files of this server, quoted (tail) for error messages.
    pub(crate) fn logs(&self) -> String {
        read_logs(&self.logs)
    }

    pub(crate) fn log_paths(&self) -> &[PathBuf] {
        &self.logs
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Fails (quoting the logs) if the process has already exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited during startup ({status}); its logs:{}",
                self.name,
                self.logs()
            ),
            Err(e) => bail!(
                "failed to poll {}: {e}; its logs:{}",
                self.name,
                self.logs()
            ),
        }
    }

    /// Polls until something accepts TCP connections on 127.0.0.1:`port`,
    /// failing early if the server exits and after [`READY_TIMEOUT`].
    pub(crate) fn wait_for_port(&mut self, port: u16) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.ensure_running()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not accept connections on {addr} within {READY_TIMEOUT:?}; its logs:{}",
                    self.name,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(15));
        }
    }

    /// Polls until `path` exists (e.g. a unix socket), failing early if the
    /// server exits and after [`READY_TIMEOUT`].
    pub(crate) fn wait_for_path(&mut self, path: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.ensure_running()?;
            if path.exists() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not create {} within {READY_TIMEOUT:?}; its logs:{}",
                    self.name,
                    path.display(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asks the process group to terminate (SIGTERM), without waiting.
    pub(crate) fn terminate(&mut self) {
        if self.stopped {
            return;
        }
        let _ = killpg(self.pgid(), Signal::SIGTERM);
    }

    /// Terminates the process group: SIGTERM, up to 3 s grace, then SIGKILL
    /// for the whole group (which also reaches stragglers after the leader
    /// exited) and reaps the leader.
    pub(crate) fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.terminate();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(3);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                _ => break,
            }
        }
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stopped = true;
        if std::env::var_os("FERRY_TESTKIT_VERBOSE").is_some() {
            eprintln!(
                "ferry-testkit: stopped {} (waited {:?})",
                self.name,
                started.elapsed()
            );
        }
    }

    /// SIGINT to the leader (PostgreSQL's fast shutdown) and waits up to `limit` for it to
    /// exit; true when it did. The process counts as stopped either way.
    pub(crate) fn interrupt_and_wait(&mut self, limit: Duration) -> bool {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + limit;
        let exited = loop {
            match self.child.try_wait() {
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => break false,
                _ => break true,
            }
        };
        self.stop();
        exited
    }

    fn pgid(&self) -> Pid {
        // The child called setpgid(0, 0), so its pid is its process group id.
        Pid::from_raw(self.child.id() as i32)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops several servers concurrently: all get SIGTERM first so their
/// shutdown grace periods overlap.
pub(crate) fn stop_all(processes: &mut [ServerProcess]) {
    for p in processes.iter_mut() {
        p.terminate();
    }
    for p in processes.iter_mut() {
        p.stop();
    }
}

/// Script run by the watchdog: collect process group ids from stdin until
/// EOF (i.e. the test process is gone), then kill those groups and remove the
/// temporary directory given as `$1`.
const WATCHDOG_SCRIPT: &str = r#"
trap '' HUP INT QUIT PIPE
groups=""
while read -r g; do groups="$groups $g"; done
for g in $groups; do kill -TERM "-$g" 2>/dev/null; done
sleep 1
for g in $groups; do kill -KILL "-$g" 2>/dev/null; done
rm -rf -- "$1"
"#;

/// Kills the registered server process groups and deletes the temp dir if the
/// owning test process dies without dropping [`crate::Servers`].
///
/// It reads group ids from a pipe whose write end only this process holds
/// (Rust opens pipes close-on-exec), so EOF means "owner gone". On a normal
/// drop the servers are stopped first and the watchdog is then SIGKILLed, so it
/// never signals a process group id that might since have been reused.
pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    pub(crate) fn start(root: &Path) -> Result<Watchdog> {
        let sh = find_program("sh")?;
        let mut child = Command::new(sh)
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("ferry-testkit-watchdog")
            .arg(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("failed to start the ferry-testkit watchdog shell")?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    fn register(&mut self, pgid: u32) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("watchdog stdin is already closed")?;
        writeln!(stdin, "{pgid}")
            .and_then(|()| stdin.flush())
            .context("failed to register a server with the watchdog")
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
        self.stdin.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_package_and_setup_script() {
        let err = find_program("ferry-testkit-no-such-program").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("ferry-testkit-no-such-program"), "{text}");
        assert!(text.contains("scripts/test.sh"), "{text}");
        let text = format!("{:#}", missing_program("nginx", "test"));
        assert!(text.contains("nginx-light"), "{text}");
        let text = format!("{:#}", missing_program("sshd", "test"));
        assert!(text.contains("openssh-server"), "{text}");
    }

    #[test]
    fn finds_sh() {
        assert!(find_program("sh").unwrap().is_absolute());
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports::<3>().unwrap();
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn log_tail_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("big.log");
        fs::write(&log, "x".repeat(100_000) + "THE END").unwrap();
        let text = read_logs(&[log, dir.path().join("missing.log")]);
        assert!(text.contains("THE END") && text.contains("earlier bytes omitted"));
        assert!(text.len() < 20_000);
        assert!(text.contains("could not read"));
    }
}

//! The git process adapter. Every git call ferry makes goes through [`Git::run`], which gives
//! it an isolated environment (no system or user config, no prompts, an allow-list of
//! protocols), credentials through the child's environment (a header and a credential helper
//! for the remote's origin; never argv, a URL or a file), a deadline and stall detection, and kills the
//! whole process group when either trips (git's helpers, ssh and remote-https included).

use crate::model::kind::{classify_stderr, ErrorKind};
use crate::model::remote::{redact_text, Credentials, Remote, Secret, Transport};
use base64::Engine;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// How long git may go without printing anything during a transfer before it counts as
/// stalled. Capped by the operation's deadline.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// A failed git call, already classified and redacted: safe to show to anyone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GitFailure {
    pub kind: ErrorKind,
    pub message: String,
}

impl GitFailure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> GitFailure {
        GitFailure {
            kind,
            message: message.into(),
        }
    }
}

/// What a finished git call printed.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    /// Redacted, with progress updates collapsed.
    pub stderr: String,
}

impl Output {
    /// Turns a non-zero exit into a classified failure described by `what` ("fetch from …").
    pub fn check(self, what: &str) -> Result<Output, GitFailure> {
        if self.success {
            Ok(self)
        } else {
            Err(failure_from_stderr(what, &self.stderr))
        }
    }
}

/// Builds a classified failure from git's stderr, keeping the lines a person needs.
pub fn failure_from_stderr(what: &str, stderr: &str) -> GitFailure {
    let kind = classify_stderr(stderr);
    let detail = summarize_stderr(stderr);
    let message = if detail.is_empty() {
        format!("{what} failed (git printed nothing)")
    } else {
        format!("{what} failed: {detail}")
    };
    GitFailure { kind, message }
}

/// The meaningful part of git's stderr on one line: fatal/error/remote/ssh lines, without
/// progress meters or ssh's banner art, at most a few lines.
pub fn summarize_stderr(stderr: &str) -> String {
    let interesting: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("@@@") && !is_progress(l))
        .collect();
    let keep = |l: &&str| {
        let l = l.to_ascii_lowercase();
        l.starts_with("fatal")
            || l.starts_with("error")
            || l.starts_with("remote: error")
            || l.contains("denied")
            || l.contains("host key")
            || l.contains("refused")
            || l.contains("not found")
    };
    let mut picked: Vec<&str> = interesting.iter().copied().filter(keep).collect();
    if picked.is_empty() {
        picked = interesting.iter().rev().take(3).rev().copied().collect();
    }
    picked.dedup();
    let joined = picked
        .iter()
        .take(4)
        .copied()
        .collect::<Vec<_>>()
        .join("; ");
    truncate(&joined, 600)
}

/// `s` cut to at most `max` bytes (on a character boundary), with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn is_progress(line: &str) -> bool {
    let l = line.trim_start_matches("remote: ");
    [
        "Enumerating objects",
        "Counting objects",
        "Compressing objects",
        "Writing objects",
        "Receiving objects",
        "Resolving deltas",
        "Total ",
        "Unpacking objects",
    ]
    .iter()
    .any(|p| l.starts_with(p))
}

/// The secrets of `remotes` that git's output could hold, to scrub from it: each password,
/// LFS password, and the `Basic` credentials git sends in an `Authorization` header.
pub fn secrets_of<'a>(remotes: impl IntoIterator<Item = &'a Remote>) -> Vec<Secret> {
    let mut secrets = Vec::new();
    for remote in remotes {
        let creds = &remote.credentials;
        secrets.extend(creds.password.clone());
        secrets.extend(remote.lfs.password.clone());
        // Only a remote reached over HTTP gets the header (see `environment`).
        let has_credentials = creds.username.is_some() || creds.password.is_some();
        if has_credentials && remote.http_origin().is_some() {
            secrets.push(basic_credentials(creds));
        }
    }
    secrets
}

/// The username and password git is given for a remote with credentials (git's default user
/// `git` when only a password is set).
fn username_and_password(creds: &Credentials) -> (&str, &str) {
    (
        creds.username.as_deref().unwrap_or("git"),
        creds.password.as_ref().map(Secret::expose).unwrap_or(""),
    )
}

/// `<username>:<password>` in base64, as an `Authorization: Basic` header carries them.
fn basic_credentials(creds: &Credentials) -> Secret {
    let (username, password) = username_and_password(creds);
    Secret::new(base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
}

/// Runs git for ferry. Cheap to clone; one per sync run.
#[derive(Debug, Clone)]
pub struct Git {
    inner: Arc<GitConfig>,
}

#[derive(Debug)]
struct GitConfig {
    program: OsString,
    timeout: Duration,
    /// Forward git's progress meters to our stderr (an interactive terminal).
    show_progress: bool,
    /// Every secret in play, scrubbed from anything git prints before ferry keeps it.
    secrets: Vec<Secret>,
    home: PathBuf,
    /// How long a transfer may go without printing anything or using any CPU.
    stall_limit: Duration,
}

/// Per-call options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Call<'a> {
    /// The remote this call talks to: selects credentials, SSH and TLS settings.
    pub remote: Option<&'a Remote>,
    /// A transfer that prints progress: enables stall detection and `--progress` forwarding.
    pub transfer: bool,
    /// Git config for this call only, passed through the environment like ferry's own.
    pub config: &'a [(String, String)],
}

impl Git {
    pub fn new(timeout: Duration, show_progress: bool, secrets: Vec<Secret>, home: PathBuf) -> Git {
        let program = std::env::var_os("FERRY_GIT").unwrap_or_else(|| "git".into());
        Git {
            inner: Arc::new(GitConfig {
                program,
                timeout,
                show_progress,
                secrets,
                home,
                stall_limit: STALL_LIMIT.min(timeout),
            }),
        }
    }

    /// The same runner with a shorter stall limit (the unit tests of stall detection).
    #[cfg(test)]
    fn with_stall_limit(self, stall_limit: Duration) -> Git {
        let cfg = &self.inner;
        Git {
            inner: Arc::new(GitConfig {
                program: cfg.program.clone(),
                timeout: cfg.timeout,
                show_progress: cfg.show_progress,
                secrets: cfg.secrets.clone(),
                home: cfg.home.clone(),
                stall_limit,
            }),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Runs `git <args>` in `cwd`. Returns the output whatever the exit status; only a timeout,
    /// a stall or a failure to start git is an error here.
    pub async fn run(
        &self,
        cwd: &Path,
        args: &[&str],
        call: Call<'_>,
    ) -> Result<Output, GitFailure> {
        let running = self.start(cwd, args, call, None, false)?;
        let clock = running.spawned;
        running.finish(clock).await
    }

    /// Runs `git <args>` as [`Git::run`] does, with its packet trace (`GIT_TRACE_PACKET`) on
    /// descriptor 3, each line handed to `on_line` as git writes it. git traces the packets it
    /// exchanges up to the start of a pack (not the pack, and no HTTP header), so what a
    /// fetch learns from its ref listing is known before the fetch ends.
    pub async fn run_tracing_packets(
        &self,
        cwd: &Path,
        args: &[&str],
        call: Call<'_>,
        mut on_line: impl FnMut(&str) + Send + 'static,
    ) -> Result<Output, GitFailure> {
        // Close-on-exec on both ends: the child gets the write end as descriptor 3 (its own
        // children inherit that one), and ferry keeps only the read end.
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
            GitFailure::new(ErrorKind::Other, format!("cannot make a pipe for git: {e}"))
        })?;
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader).map_err(|e| {
            GitFailure::new(
                ErrorKind::Other,
                format!("cannot read a pipe from git: {e}"),
            )
        })?;
        let running = self.start(cwd, args, call, Some(writer), true)?;
        // Read to the end whatever `on_line` makes of it: git blocks on a full pipe.
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            let mut line = Vec::new();
            while let Ok(n) = reader.read_until(b'\n', &mut line).await {
                if n == 0 {
                    break;
                }
                on_line(String::from_utf8_lossy(&line).trim_end());
                line.clear();
            }
        });
        let clock = running.spawned;
        running.finish(clock).await
    }

    /// Starts `git <args>` in `cwd` with its hooks held at a gate (see [`HeldCall`]): a
    /// `pre-push` hook of `core.hooksPath` reads ferry's word from descriptor 3. Its deadline
    /// and stall clock start when the gate opens.
    pub fn start_held(
        &self,
        cwd: &Path,
        args: &[&str],
        call: Call<'_>,
    ) -> Result<HeldCall, GitFailure> {
        // Close-on-exec on both ends: only this child gets the read end (as descriptor 3), and
        // no other child holds the write end open past ferry's.
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
            GitFailure::new(ErrorKind::Other, format!("cannot make a pipe for git: {e}"))
        })?;
        let running = self.start(cwd, args, call, Some(reader), false)?;
        Ok(HeldCall {
            running,
            gate: std::fs::File::from(writer),
        })
    }

    /// Spawns the call; `descriptor_3`, when given, becomes the child's descriptor 3 (and is
    /// closed here once the child has it); `trace_packets` has git write its packet trace
    /// there.
    fn start(
        &self,
        cwd: &Path,
        args: &[&str],
        call: Call<'_>,
        descriptor_3: Option<std::os::fd::OwnedFd>,
        trace_packets: bool,
    ) -> Result<Running, GitFailure> {
        let cfg = &self.inner;
        let spawned = Instant::now();
        let gate = descriptor_3;
        let mut child = self.spawn(cwd, args, call, Stdio::null(), gate.as_ref(), trace_packets)?;
        drop(gate);
        let group = ProcessGroup(child.id());
        let activity = Arc::new(AtomicU64::new(0));
        let stdout = child
            .stdout
            .take()
            .map(|s| tokio::spawn(read_all(s, activity.clone(), spawned, false)));
        let stderr = child.stderr.take().map(|s| {
            tokio::spawn(read_all(
                s,
                activity.clone(),
                spawned,
                cfg.show_progress && call.transfer,
            ))
        });
        Ok(Running {
            git: self.clone(),
            command: command_of(args).to_owned(),
            args: args.join(" "),
            transfer: call.transfer,
            child,
            group,
            activity,
            stdout,
            stderr,
            spawned,
            waited: false,
        })
    }

    /// Spawns `git <args>` in `cwd` in its own process group with the isolated environment
    /// (credentials for the call's remote, its config), stdout and stderr piped; killed when
    /// dropped.
    fn spawn(
        &self,
        cwd: &Path,
        args: &[&str],
        call: Call<'_>,
        stdin: Stdio,
        gate: Option<&std::os::fd::OwnedFd>,
        trace_packets: bool,
    ) -> Result<tokio::process::Child, GitFailure> {
        let program = &self.inner.program;
        let mut command = tokio::process::Command::new(program);
        die_with_this_process(&mut command);
        if let Some(gate) = gate {
            hand_over_as_descriptor_3(&mut command, gate);
        }
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .envs(self.environment(call.remote, call.config, |name| std::env::var(name).ok()));
        if trace_packets {
            command.env("GIT_TRACE_PACKET", "3");
        }
        command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                GitFailure::new(
                    ErrorKind::Config,
                    format!(
                        "cannot run git ({}): {e}; install git and make sure it is on PATH",
                        program.to_string_lossy()
                    ),
                )
            })
    }

    /// Starts `git <args>` in `cwd` as a [`Session`]: a long-running process (`cat-file
    /// --batch`) that answers requests on its stdin, under the same environment, deadline and
    /// process-group rules as [`Git::run`]. Local only: no remote, no credentials.
    pub fn session(&self, cwd: &Path, args: &[&str]) -> Result<Session, GitFailure> {
        let started = Instant::now();
        let mut child = self.spawn(cwd, args, Call::default(), Stdio::piped(), None, false)?;
        let group = ProcessGroup(child.id());
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(GitFailure::new(
                ErrorKind::Other,
                "git was started without its pipes",
            ));
        };
        let stderr = child
            .stderr
            .take()
            .map(|s| tokio::spawn(read_all(s, Arc::new(AtomicU64::new(0)), started, false)));
        Ok(Session {
            git: self.clone(),
            args: args.join(" "),
            child,
            stdin: Some(BufWriter::new(stdin)),
            stdout: BufReader::new(stdout),
            stderr,
            group,
            started,
            deadline: tokio::time::Instant::from_std(started + self.inner.timeout),
            logged: false,
        })
    }

    /// The output of a call whose git has exited (its process group killed, its pipes read):
    /// stderr scrubbed of secrets and URL credentials, and the call logged.
    fn finished(
        &self,
        args: &str,
        started: Instant,
        status: std::process::ExitStatus,
        stdout: String,
        stderr: &str,
    ) -> Output {
        let stderr = redact_text(&self.scrub(stderr.to_owned()));
        tracing::debug!(
            args = %args,
            status = %status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            stderr = %stderr,
            "git finished"
        );
        Output {
            success: status.success(),
            stdout,
            stderr,
        }
    }

    /// Replaces every known secret in `text` with `***`. Text without one is returned as it
    /// is: a listing of 10k refs is 700 kB, copied for nothing otherwise.
    pub fn scrub(&self, text: String) -> String {
        let mut out = text;
        for s in &self.inner.secrets {
            let secret = s.expose();
            if secret.len() >= 3 && out.contains(secret) {
                out = out.replace(secret, "***");
            }
        }
        out
    }

    /// The git child's whole environment, built from `remote`, the call's own `config` and the
    /// few variables of ours (`parent`) that git may see.
    fn environment(
        &self,
        remote: Option<&Remote>,
        extra_config: &[(String, String)],
        parent: impl Fn(&str) -> Option<String>,
    ) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = Vec::new();
        let mut set = |k: &str, v: &str| env.push((k.into(), v.into()));
        set(
            "PATH",
            &parent("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        );
        let home = parent("HOME").unwrap_or_else(|| self.inner.home.display().to_string());
        set("HOME", &home);
        set("LC_ALL", "C");
        set("LANG", "C");
        set("GIT_CONFIG_NOSYSTEM", "1");
        set("GIT_CONFIG_GLOBAL", "/dev/null");
        set("GIT_TERMINAL_PROMPT", "0");
        set("GIT_ASKPASS", "");
        set("SSH_ASKPASS", "");
        set("GCM_INTERACTIVE", "never");
        set("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh");
        set("GIT_PROTOCOL_FROM_USER", "0");
        // What the host needs to reach and trust servers; none of it is a secret. The
        // SSL_CERT_* variables point OpenSSL at the host's trust store.
        for passthrough in [
            "TMPDIR",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "NO_PROXY",
        ] {
            if let Some(v) = parent(passthrough) {
                set(passthrough, &v);
            }
        }

        // Config through the environment (git >= 2.31), so nothing lands in argv.
        let mut config: Vec<(String, String)> = vec![
            ("gc.autoDetach".into(), "false".into()),
            ("core.askPass".into(), String::new()),
            ("credential.helper".into(), String::new()),
            ("http.lowSpeedLimit".into(), "1".into()),
            (
                "http.lowSpeedTime".into(),
                STALL_LIMIT
                    .min(self.inner.timeout)
                    .as_secs()
                    .max(1)
                    .to_string(),
            ),
        ];
        if let Some(remote) = remote {
            let creds = &remote.credentials;
            let has_credentials = creds.username.is_some() || creds.password.is_some();
            if let Some(origin) = remote.http_origin().filter(|_| has_credentials) {
                // The helper answers only for the remote's own scheme, host and port (git
                // matches `credential.<url>.*` on all three, default ports normalized), and
                // prints what the child's environment holds: the script names variables, never
                // values.
                config.push((
                    format!("credential.{origin}.helper"),
                    "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \"$FERRY_GIT_USERNAME\" \"$FERRY_GIT_PASSWORD\"; }; f".into(),
                ));
                // No redirects at all, even to the same origin (a renamed repository): git
                // cannot follow only same-origin ones, and after following one it sends its
                // next requests to the new origin from connections that still hold the
                // password, helper or not. The failure's kind says to use the new URL. Remotes
                // without credentials keep git's default (follow on the first request).
                config.push(("http.followRedirects".into(), "false".into()));
                // The credentials go with the first request, as a header for the remote's
                // origin only (in the environment, like the helper's): no 401 first, and no
                // helper process before the first request nor after the last one (git runs
                // every helper again to `store` credentials it had to ask for), about 3.5 ms
                // of each git call over HTTP. Safe because the only origin this git call
                // can reach is the remote's own. A server that refuses them answers 401:
                // git then asks the helper, and fails with its usual message.
                let (username, password) = username_and_password(creds);
                config.push((
                    format!("http.{origin}.extraHeader"),
                    format!("Authorization: Basic {}", basic_credentials(creds).expose()),
                ));
                set("FERRY_GIT_USERNAME", username);
                set("FERRY_GIT_PASSWORD", password);
            }
            if let Some(ca) = &creds.ca_file {
                config.push(("http.sslCAInfo".into(), ca.display().to_string()));
            }
            if remote.transport == Transport::Ssh {
                set("GIT_SSH_COMMAND", &ssh_command(remote));
                set("GIT_SSH_VARIANT", "ssh");
                if creds.ssh_key.is_none() {
                    if let Some(sock) = parent("SSH_AUTH_SOCK") {
                        set("SSH_AUTH_SOCK", &sock);
                    }
                }
            }
        }
        config.extend(extra_config.iter().cloned());
        set("GIT_CONFIG_COUNT", &config.len().to_string());
        for (i, (k, v)) in config.iter().enumerate() {
            set(&format!("GIT_CONFIG_KEY_{i}"), k);
            set(&format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        env
    }
}

/// A started git call (see [`Git::run`]): killed, with its whole process group, when dropped.
struct Running {
    git: Git,
    /// The git command (`push`, `fetch`), for messages.
    command: String,
    args: String,
    transfer: bool,
    child: Child,
    group: ProcessGroup,
    /// Milliseconds after `spawned` at which git last printed something.
    activity: Arc<AtomicU64>,
    stdout: Option<tokio::task::JoinHandle<Vec<u8>>>,
    stderr: Option<tokio::task::JoinHandle<Vec<u8>>>,
    spawned: Instant,
    /// Whether git's end was logged with its output (else it is logged, and stopped, when
    /// this is dropped).
    waited: bool,
}

impl Drop for Running {
    /// A call dropped before its end was logged (a fetch whose listing showed nothing to
    /// fetch, a held push its plan did not make, a cancelled sync, a call past its deadline)
    /// is logged like a finished one, so that the log accounts for every git process; `group`
    /// kills it if it still runs.
    fn drop(&mut self) {
        if !self.waited {
            log_unfinished(&self.args, self.spawned, &mut self.child);
        }
    }
}

/// Logs a call whose end was not logged with its output (see the `Drop`s of [`Running`] and
/// [`Session`]) like a finished one: with git's own status when it has exited, else as
/// stopped (the call's process group is killed next).
fn log_unfinished(args: &str, spawned: Instant, child: &mut Child) {
    let status = match child.try_wait() {
        Ok(Some(status)) => status.to_string(),
        _ => "stopped by ferry before it exited".to_owned(),
    };
    tracing::debug!(
        args = %args,
        status = %status,
        elapsed_ms = spawned.elapsed().as_millis() as u64,
        stderr = "",
        "git finished"
    );
}

impl Running {
    /// Waits for git to exit, the deadline and stall clock running from `clock` (the spawn,
    /// or the moment a held call's gate opened: waiting for ferry is not git's time).
    async fn finish(mut self, clock: Instant) -> Result<Output, GitFailure> {
        let cfg = &self.git.inner;
        let deadline = clock + cfg.timeout;
        let stall = cfg.stall_limit;
        // The CPU time git's processes had used when it was last found quiet.
        let mut cpu_seen = 0;
        let status = loop {
            tokio::select! {
                status = self.child.wait() => break status,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    let now = Instant::now();
                    let last_heard = self.spawned
                        + Duration::from_millis(self.activity.load(Ordering::Relaxed));
                    let idle = now.duration_since(last_heard.max(clock));
                    let timed_out = now >= deadline;
                    let mut stalled = self.transfer && idle >= stall;
                    if stalled && !timed_out {
                        // Quiet is not stalled while git computes: `send-pack` matches 10,000
                        // refspecs for a minute before it prints anything. Used CPU since the
                        // last look counts as progress.
                        if let Some(cpu) = self.group.cpu_ticks().filter(|&c| c > cpu_seen) {
                            cpu_seen = cpu;
                            let since_spawn = now.duration_since(self.spawned).as_millis();
                            self.activity.store(since_spawn as u64, Ordering::Relaxed);
                            stalled = false;
                        }
                    }
                    if timed_out || stalled {
                        // Logged as stopped when dropped, on the way out.
                        self.group.kill();
                        let _ = self.child.wait().await;
                        let what = if timed_out {
                            format!("git {} did not finish within {}", self.command, humantime::format_duration(cfg.timeout))
                        } else {
                            format!("git {} made no progress for {}", self.command, humantime::format_duration(stall))
                        };
                        return Err(GitFailure::new(ErrorKind::Timeout, format!("{what}; it was stopped")));
                    }
                }
            }
        };
        let status = status.map_err(|e| {
            GitFailure::new(ErrorKind::Other, format!("waiting for git failed: {e}"))
        })?;
        // git has exited; anything still holding its pipes (a stray helper) is killed so the
        // reads below finish. The group id cannot have been reused yet: a pid is not handed
        // out again while a process group with that id exists, and ours was alive a moment ago.
        self.group.kill();
        let stdout = self.git.scrub(join_reader(self.stdout.take()).await);
        let stderr = collapse_progress(&join_reader(self.stderr.take()).await);
        self.waited = true;
        Ok(self
            .git
            .finished(&self.args, self.spawned, status, stdout, &stderr))
    }
}

/// The git command of a call's arguments (`push` in `-c core.hooksPath=… push …`): the first
/// argument that is neither an option nor the value of `-c` or `-C`.
fn command_of<'a>(args: &[&'a str]) -> &'a str {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "-c" | "-C" => {
                args.next();
            }
            option if option.starts_with('-') => {}
            command => return command,
        }
    }
    ""
}

/// What a held call's `pre-push` hook runs: it waits for a line on descriptor 3 and lets the
/// push go on only when that line is `go`. Anything else, or the descriptor closing (ferry
/// dropped the call, or died), stops the push before it sends anything.
pub const GATE_HOOK: &str = "#!/bin/sh\n\
# ferry: a push started ahead of its data waits here for ferry's word on descriptor 3.\n\
read -r verdict <&3 || exit 1\n\
test \"$verdict\" = go\n";

/// A git call started ahead of time and held at its `pre-push` hook (see [`GATE_HOOK`]): git
/// connects, reads the remote's advertisement and checks the leases, then waits. Opening the
/// gate ([`HeldCall::release`]) lets it push; dropping it stops the push before anything is
/// sent and kills the call.
pub struct HeldCall {
    running: Running,
    /// The write end of the gate's pipe.
    gate: std::fs::File,
}

impl HeldCall {
    /// Opens the gate and waits for the call like [`Git::run`], its deadline starting now.
    /// A call that finished without reaching its hook (nothing to push, a stale lease) just
    /// reports how it ended.
    pub async fn release(self) -> Result<Output, GitFailure> {
        let HeldCall { running, mut gate } = self;
        // The pipe is empty and the word is a few bytes: this never blocks. A call that ended
        // already has closed its end; its output says how it ended.
        let _ = gate.write_all(b"go\n");
        drop(gate);
        running.finish(Instant::now()).await
    }
}

/// One object as `cat-file --batch` prints it.
pub struct BatchObject {
    pub id: String,
    /// `commit`, `tree`, `blob` or `tag`.
    pub kind: String,
    pub body: Vec<u8>,
}

/// A long-running git process spoken to over its stdin and stdout (see [`Git::session`]).
/// Every request and answer must arrive before the call's deadline; past it the whole process
/// group is killed. Dropping a session kills it too.
pub struct Session {
    git: Git,
    args: String,
    child: Child,
    /// `None` once closed by [`Session::finish`].
    stdin: Option<BufWriter<ChildStdin>>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<tokio::task::JoinHandle<Vec<u8>>>,
    group: ProcessGroup,
    started: Instant,
    deadline: tokio::time::Instant,
    /// Whether its end was logged by [`Session::finish`] (else it is logged when dropped).
    logged: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.logged {
            log_unfinished(&self.args, self.started, &mut self.child);
        }
    }
}

impl Session {
    /// Sends one request line (the newline is added) and flushes it.
    pub async fn send(&mut self, line: &str) -> Result<(), GitFailure> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(GitFailure::new(ErrorKind::Other, "git's input is closed"));
        };
        let write = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        match tokio::time::timeout_at(self.deadline, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.stopped(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Closes git's input, for a command that reads all its requests before it answers
    /// (`rev-list --stdin`); its answer is read as before.
    pub fn close_input(&mut self) {
        self.stdin = None;
    }

    /// Reads one line of the answer, without its newline; `None` when git's output ended.
    pub async fn read_line(&mut self) -> Result<Option<String>, GitFailure> {
        let mut line = Vec::new();
        match tokio::time::timeout_at(self.deadline, self.stdout.read_until(b'\n', &mut line)).await
        {
            Ok(Ok(0)) => Ok(None),
            Ok(Ok(_)) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Ok(Some(String::from_utf8_lossy(&line).into_owned()))
            }
            Ok(Err(e)) => Err(self.stopped(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Reads one answer of `cat-file --batch`: the object's id, type and content; `None` for
    /// an object git does not have (`<name> missing`) or a header it cannot be read from.
    pub async fn read_object(&mut self) -> Result<Option<BatchObject>, GitFailure> {
        let Some(header) = self.read_line().await? else {
            return Err(GitFailure::new(
                ErrorKind::Other,
                "git cat-file stopped answering",
            ));
        };
        // "<oid> <type> <size>", or "<request> missing" (or "ambiguous").
        let mut words = header.split(' ');
        let (Some(id), Some(kind), Some(size), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Ok(None);
        };
        let Ok(size) = size.parse::<usize>() else {
            return Ok(None);
        };
        // The object, then a newline.
        let mut body = self.read_exact(size + 1).await?;
        body.truncate(size);
        Ok(Some(BatchObject {
            id: id.to_owned(),
            kind: kind.to_owned(),
            body,
        }))
    }

    /// Reads exactly `len` bytes of the answer.
    pub async fn read_exact(&mut self, len: usize) -> Result<Vec<u8>, GitFailure> {
        let mut buf = vec![0; len];
        match tokio::time::timeout_at(self.deadline, self.stdout.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Ok(buf),
            Ok(Err(e)) => Err(self.stopped(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Closes git's input, waits (up to the deadline) for it to exit, and returns how it ended
    /// and what it printed on stderr (redacted); stdout is left unread.
    pub async fn finish(mut self) -> Result<Output, GitFailure> {
        self.stdin = None;
        let status = match tokio::time::timeout_at(self.deadline, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(GitFailure::new(
                    ErrorKind::Other,
                    format!("waiting for git failed: {e}"),
                ))
            }
            Err(_) => return Err(self.timed_out()),
        };
        self.group.kill();
        let stderr = join_reader(self.stderr.take()).await;
        self.logged = true;
        Ok(self
            .git
            .finished(&self.args, self.started, status, String::new(), &stderr))
    }

    fn stopped(&self, e: std::io::Error) -> GitFailure {
        GitFailure::new(
            ErrorKind::Other,
            format!("git {} stopped answering: {e}", self.args),
        )
    }

    fn timed_out(&self) -> GitFailure {
        self.group.kill();
        GitFailure::new(
            ErrorKind::Timeout,
            format!(
                "git {} did not finish within {}; it was stopped",
                self.args,
                humantime::format_duration(self.git.timeout())
            ),
        )
    }
}

/// ssh with no user config, batch mode (never prompts), strict host key checking, and only the
/// configured key. Paths are absolute and shell-quoted because git runs this through `sh -c`.
fn ssh_command(remote: &Remote) -> String {
    let creds = &remote.credentials;
    let mut cmd = String::from("ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o LogLevel=ERROR");
    if let Some(kh) = &creds.known_hosts {
        cmd.push_str(&format!(
            " -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null",
            shell_quote(&kh.display().to_string())
        ));
    }
    if let Some(key) = &creds.ssh_key {
        cmd.push_str(&format!(
            " -o IdentitiesOnly=yes -i {}",
            shell_quote(&key.display().to_string())
        ));
    }
    cmd
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Has the kernel SIGKILL the git child when ferry dies, however it dies: a node killed with
/// `kill -9` must not leave a push running that would land behind the back of the node that
/// takes its mirror over. (Drop-time cleanup, [`ProcessGroup`], covers every other exit.)
/// The git child's own helpers end with it: their pipes to git close.
///
/// The signal is tied to the thread that spawns the child; ferry spawns git from the tokio
/// runtime's worker threads (which live as long as the runtime) or from a thread that waits for
/// the child, so it never fires early.
#[cfg(target_os = "linux")]
fn die_with_this_process(command: &mut tokio::process::Command) {
    use nix::errno::Errno;
    use nix::sys::{prctl, signal::Signal};
    let ferry = nix::unistd::getpid();
    let in_child = move || -> std::io::Result<()> {
        prctl::set_pdeathsig(Signal::SIGKILL)?;
        // ferry may have died between the fork and the prctl: then nobody would send it.
        if nix::unistd::getppid() != ferry {
            return Err(Errno::ESRCH.into());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec; it makes only the
    // async-signal-safe calls prctl(2) and getppid(2) and allocates nothing (an errno
    // converts to an io::Error without allocating).
    unsafe {
        command.pre_exec(in_child);
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_this_process(_command: &mut tokio::process::Command) {}

/// Makes `gate` the child's descriptor 3, open across exec: a held call's hook reads ferry's
/// word there (see [`GATE_HOOK`]). Every other descriptor of ferry's stays close-on-exec.
fn hand_over_as_descriptor_3(command: &mut tokio::process::Command, gate: &std::os::fd::OwnedFd) {
    use nix::libc;
    use std::os::fd::AsRawFd;
    const GATE_FD: i32 = 3;
    let fd = gate.as_raw_fd();
    let in_child = move || -> std::io::Result<()> {
        // SAFETY: fcntl(2) and dup2(2) on descriptors of this forked child are
        // async-signal-safe and allocate nothing.
        let done = unsafe {
            if fd == GATE_FD {
                // dup2 onto itself would keep close-on-exec: clear the flag instead.
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, GATE_FD)
            }
        };
        if done < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and makes only the
    // async-signal-safe calls above.
    unsafe {
        command.pre_exec(in_child);
    }
}

/// Kills the whole process group of a git call (git, its remote helpers, ssh).
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn kill(&self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl ProcessGroup {
    /// The CPU time (user and system, in clock ticks) the group's live processes have used,
    /// with that of their children they have waited for; `None` where `/proc` cannot tell.
    fn cpu_ticks(&self) -> Option<u64> {
        let group = self.0?;
        let mut total = 0;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid pgrp ... utime stime ...`: comm can hold anything, so the
            // fields are counted from its closing parenthesis.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            if number(2) == Some(u64::from(group)) {
                total += (11..=14).filter_map(number).sum::<u64>();
            }
        }
        Some(total)
    }
}

impl Drop for ProcessGroup {
    /// A cancelled sync (the future dropped) must not leave git running.
    fn drop(&mut self) {
        self.kill();
    }
}

async fn read_all(
    mut pipe: impl AsyncRead + Unpin,
    activity: Arc<AtomicU64>,
    started: Instant,
    forward: bool,
) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                if forward {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(&buf[..n]);
                    let _ = err.flush();
                }
                all.extend_from_slice(&buf[..n]);
            }
        }
    }
    all
}

async fn join_reader(handle: Option<tokio::task::JoinHandle<Vec<u8>>>) -> String {
    let Some(handle) = handle else {
        return String::new();
    };
    match tokio::time::timeout(Duration::from_secs(5), handle).await {
        // Valid UTF-8 (git's output nearly always is) becomes the string without a copy.
        Ok(Ok(bytes)) => String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        _ => String::new(),
    }
}

/// Keeps only the final state of each `\r`-updated progress line.
fn collapse_progress(stderr: &str) -> String {
    stderr
        .lines()
        .map(|l| l.rsplit('\r').find(|s| !s.trim().is_empty()).unwrap_or(""))
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_s_secrets_include_its_authorization_header_as_git_is_given_it() {
        let mut remote = Remote::parse("https://git.example.com/app.git", Path::new("/")).unwrap();
        remote.credentials.username = Some("bot".into());
        remote.credentials.password = Some(Secret::new("pa55word".into()));
        let encoded = base64::engine::general_purpose::STANDARD.encode("bot:pa55word");
        let git = Git::new(
            Duration::from_secs(60),
            false,
            secrets_of([&remote]),
            std::env::temp_dir(),
        );
        assert_eq!(
            git.scrub(format!("sent Authorization: Basic {encoded} with pa55word")),
            "sent Authorization: Basic *** with ***"
        );
    }

    #[test]
    fn scrubbing_replaces_every_secret_and_leaves_text_without_one_as_it_is() {
        let git = Git::new(
            Duration::from_secs(60),
            false,
            vec![
                Secret::new("hunter2".into()),
                Secret::new("s3cr3t-token".into()),
                // Too short to tell from ordinary text.
                Secret::new("ab".into()),
            ],
            std::env::temp_dir(),
        );
        assert_eq!(
            git.scrub("fatal: auth hunter2 and s3cr3t-token, hunter2 again; ab".into()),
            "fatal: auth *** and ***, *** again; ab"
        );
        assert_eq!(
            git.scrub("nothing secret here".into()),
            "nothing secret here"
        );
    }

    /// What the calls `calls` makes log at debug level, as ferry's JSON log lines.
    fn logged_by(calls: impl std::future::Future<Output = ()>) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))?
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || runtime.block_on(calls));
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn every_git_call_is_logged_as_finished_however_it_ends() {
        let lines = logged_by(async {
            let cwd = std::env::temp_dir();
            let git = Git::new(Duration::from_secs(60), false, Vec::new(), cwd.clone());
            let wait = ["-c", "alias.wait=!sleep 5", "wait"];
            // Runs to its end.
            git.run(&cwd, &["--version"], Call::default())
                .await
                .unwrap();
            // Dropped by ferry while it runs.
            let dropped = tokio::time::timeout(
                Duration::from_millis(300),
                git.run(&cwd, &wait, Call::default()),
            )
            .await;
            assert!(dropped.is_err(), "still running when dropped");
            // Past its deadline.
            let hasty = Git::new(Duration::from_millis(300), false, Vec::new(), cwd.clone());
            let late = hasty.run(&cwd, &wait, Call::default()).await.unwrap_err();
            assert_eq!(late.kind, ErrorKind::Timeout);
            // A session dropped while it waits for its input.
            let session = git.session(&cwd, &["hash-object", "--stdin"]).unwrap();
            drop(session);
        });
        let finished: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("git finished"))
            .collect();
        assert_eq!(finished.len(), 4, "{lines:#?}");
        assert!(finished[0].contains("--version") && finished[0].contains("exit status: 0"));
        assert!(finished[1].contains("alias.wait") && finished[1].contains("stopped by ferry"));
        // Killed past its deadline: git's own end, a signal.
        assert!(finished[2].contains("alias.wait") && finished[2].contains("SIGKILL"));
        assert!(finished[3].contains("hash-object") && finished[3].contains("stopped by ferry"));
    }

    /// A transfer-like git call (stall detection on) running `script` through an alias, with a
    /// one-second stall limit.
    async fn quiet_transfer(script: &str) -> Result<Output, GitFailure> {
        let git = Git::new(
            Duration::from_secs(60),
            false,
            Vec::new(),
            std::env::temp_dir(),
        )
        .with_stall_limit(Duration::from_secs(1));
        let alias = format!("alias.quiet=!{script}");
        let call = Call {
            transfer: true,
            ..Call::default()
        };
        git.run(&std::env::temp_dir(), &["-c", &alias, "quiet"], call)
            .await
    }

    #[tokio::test]
    async fn a_quiet_git_that_computes_is_not_stalled() {
        // About three seconds of arithmetic, printing nothing.
        let out = quiet_transfer("i=0; while [ $i -lt 1500000 ]; do i=$((i+1)); done")
            .await
            .unwrap();
        assert!(out.success, "{}", out.stderr);
    }

    #[tokio::test]
    async fn a_quiet_git_that_waits_is_stalled() {
        let e = quiet_transfer("sleep 30").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        // The call is `git -c alias.quiet=... quiet`: the message names the command, not `-c`.
        assert!(
            e.message.starts_with("git quiet made no progress"),
            "{}",
            e.message
        );
    }

    #[test]
    fn summaries_keep_the_lines_that_explain_the_failure() {
        let stderr = "Enumerating objects: 3, done.\nremote: Counting objects: 100% (3/3)\nerror: RPC failed; HTTP 413 curl 22 The requested URL returned error: 413\nfatal: the remote end hung up unexpectedly\nEverything up-to-date";
        let s = summarize_stderr(stderr);
        assert_eq!(s, "error: RPC failed; HTTP 413 curl 22 The requested URL returned error: 413; fatal: the remote end hung up unexpectedly");
        assert_eq!(
            failure_from_stderr("push", stderr).kind,
            ErrorKind::TooLarge
        );
    }

    #[test]
    fn progress_updates_collapse_to_their_final_state() {
        let s = collapse_progress(
            "Receiving objects:  10% (1/10)\rReceiving objects: 100% (10/10), done.\nfatal: x\n",
        );
        assert_eq!(s, "Receiving objects: 100% (10/10), done.\nfatal: x");
    }

    /// The environment a git child gets, from a made-up parent environment.
    fn child_environment(
        remote: Option<&Remote>,
        parent: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let git = Git::new(
            Duration::from_secs(60),
            false,
            Vec::new(),
            "/home/ferry".into(),
        );
        git.environment(remote, &[], |name| {
            parent
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect()
    }

    #[test]
    fn the_isolated_environment_keeps_the_tls_trust_store_variables_and_drops_the_rest() {
        let env = child_environment(
            None,
            &[
                ("SSL_CERT_FILE", "/etc/corp/ca.pem"),
                ("SSL_CERT_DIR", "/etc/corp/certs"),
                ("GIT_DIR", "/somewhere/else"),
                ("FERRY_SOURCE_PASSWORD", "s3cret"),
            ],
        );
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("SSL_CERT_FILE"), Some("/etc/corp/ca.pem"));
        assert_eq!(get("SSL_CERT_DIR"), Some("/etc/corp/certs"));
        assert_eq!(get("GIT_DIR"), None);
        assert_eq!(get("FERRY_SOURCE_PASSWORD"), None);
    }

    /// The `GIT_CONFIG_KEY_n` / `GIT_CONFIG_VALUE_n` pairs of a child environment, in order.
    fn git_config(env: &[(String, String)]) -> Vec<(String, String)> {
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let count: usize = get("GIT_CONFIG_COUNT")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                Some((
                    get(&format!("GIT_CONFIG_KEY_{i}"))?,
                    get(&format!("GIT_CONFIG_VALUE_{i}"))?,
                ))
            })
            .collect()
    }

    #[test]
    fn credentials_are_offered_only_to_the_remotes_origin_and_redirects_are_not_followed() {
        let remote = Remote::parse(
            "https://bot:pa55word@Git.Example.com:8443/org/app.git",
            Path::new("/"),
        )
        .unwrap();
        let env = child_environment(Some(&remote), &[]);
        let config = git_config(&env);
        let helpers: Vec<&(String, String)> = config
            .iter()
            .filter(|(k, _)| k.starts_with("credential.") && k.ends_with(".helper"))
            .collect();
        assert_eq!(helpers.len(), 2, "{config:?}");
        assert_eq!(helpers[0], &("credential.helper".into(), String::new()));
        assert_eq!(
            helpers[1].0,
            "credential.https://git.example.com:8443.helper"
        );
        assert!(config.contains(&("http.followRedirects".into(), "false".into())));
        // The password is in the header alone, encoded as `Basic` credentials are.
        let encoded = base64::engine::general_purpose::STANDARD.encode("bot:pa55word");
        assert!(!config
            .iter()
            .filter(|(k, _)| !k.ends_with("extraHeader"))
            .any(|(_, v)| v.contains("pa55word") || v.contains(&encoded)));
        let headers: Vec<&(String, String)> = config
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().ends_with("extraheader"))
            .collect();
        assert_eq!(
            headers,
            [&(
                "http.https://git.example.com:8443.extraHeader".to_owned(),
                format!("Authorization: Basic {encoded}")
            )],
            "sent with the first request, to the remote's origin alone"
        );

        let anonymous = Remote::parse("https://git.example.com/app.git", Path::new("/")).unwrap();
        let config = git_config(&child_environment(Some(&anonymous), &[]));
        assert!(
            config
                .iter()
                .all(|(k, v)| !k.starts_with("credential.") || v.is_empty()),
            "{config:?}"
        );
        assert!(!config.iter().any(|(k, _)| k.ends_with("extraHeader")));
        assert!(!config.iter().any(|(k, _)| k == "http.followRedirects"));
    }

    #[test]
    fn ssh_command_quotes_paths_and_checks_host_keys_strictly() {
        let mut r = Remote::parse("ssh://git@h:22/r.git", Path::new("/")).unwrap();
        r.credentials.ssh_key = Some("/k e y".into());
        r.credentials.known_hosts = Some("/kh".into());
        let c = ssh_command(&r);
        assert!(c.contains("StrictHostKeyChecking=yes") && c.contains("BatchMode=yes"));
        assert!(
            c.contains("-i '/k e y'") && c.contains("UserKnownHostsFile='/kh'"),
            "{c}"
        );
    }
}

//! A real `ferry serve` process for the service section: started on a free
//! loopback port from a generated config, its JSON log lines captured, and
//! plain HTTP helpers (signed GitHub-style webhooks, the JSON API).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The webhook secret of every benchmark mirror (given through this variable).
pub const SECRET_VAR: &str = "FERRY_BENCH_WEBHOOK_SECRET";
const SECRET: &str = "ferry-bench-hook-s3cret";
/// The HTTP password of the writer account (given through this variable).
pub const PASSWORD_VAR: &str = "FERRY_BENCH_WRITER_PASSWORD";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `ferry serve`; killed (SIGKILL) when dropped.
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
    agent: ureq::Agent,
}

impl Serve {
    /// Writes `config` (a whole ferry.toml whose `[serve]` section listens on
    /// 127.0.0.1:0) to `dir/ferry.toml` and starts `ferry serve` on it,
    /// waiting for its "ferry serve is ready" log line.
    pub fn start(ferry: &Path, dir: &Path, config: &str, password: &str) -> Result<Serve> {
        Serve::start_with_env(ferry, dir, config, password, &[])
    }

    /// [`Serve::start`] with `env` added to the service's environment.
    pub fn start_with_env(
        ferry: &Path,
        dir: &Path,
        config: &str,
        password: &str,
        env: &[(&str, &str)],
    ) -> Result<Serve> {
        let config_path = dir.join("ferry.toml");
        fs::write(&config_path, config)
            .with_context(|| format!("failed to write {}", config_path.display()))?;
        let mut cmd = Command::new(ferry);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env(SECRET_VAR, SECRET)
            .env(PASSWORD_VAR, password)
            .env_remove("FERRY_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("failed to start {cmd:?}"))?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("ferry serve is ready") {
                        let listen = serde_json::from_str::<Value>(&line)
                            .ok()
                            .and_then(|v| v["listen"].as_str().map(str::to_owned));
                        let _ = tx.send(listen);
                    }
                    if let Ok(mut l) = logs.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let listen = rx.recv_timeout(READY_TIMEOUT).ok().flatten();
        let agent = ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build();
        let mut serve = Serve {
            child,
            base: String::new(),
            logs,
            agent,
        };
        match listen {
            Some(listen) => serve.base = format!("http://{listen}"),
            None => bail!(
                "ferry serve did not become ready within {READY_TIMEOUT:?}; logs:\n{}",
                serve.log_tail(40)
            ),
        }
        Ok(serve)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The captured log lines so far, parsed (lines that are not JSON are skipped).
    pub fn log_events(&self) -> Vec<Value> {
        self.logs
            .lock()
            .map(|l| {
                l.iter()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last `n` log lines, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        self.logs
            .lock()
            .map(|l| l[l.len().saturating_sub(n)..].join("\n"))
            .unwrap_or_default()
    }

    /// `GET path` as JSON (must be 200).
    pub fn get_json(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url} failed"))?;
        response
            .into_json()
            .with_context(|| format!("GET {url}: not JSON"))
    }

    /// The `state` of one mirror from `GET /api/mirrors/{name}`.
    pub fn mirror_state(&self, name: &str) -> Result<String> {
        let v = self.get_json(&format!("/api/mirrors/{name}"))?;
        Ok(v["state"].as_str().unwrap_or("?").to_owned())
    }

    /// How many runs the mirror has recorded (up to 500).
    pub fn run_count(&self, name: &str) -> Result<usize> {
        let v = self.get_json(&format!("/api/mirrors/{name}/runs?limit=500"))?;
        Ok(v.as_array().map_or(0, Vec::len))
    }

    /// Polls every `every` until `check` holds; fails after `limit`.
    pub fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        every: Duration,
        mut check: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            if check()? {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!(
                    "timed out after {limit:?} waiting for {what}; ferry serve's last logs:\n{}",
                    self.log_tail(20)
                );
            }
            thread::sleep(every);
        }
    }

    /// Waits until `name` is idle.
    pub fn wait_idle(&self, name: &str, limit: Duration) -> Result<()> {
        self.wait_until(
            &format!("mirror {name} to be idle"),
            limit,
            Duration::from_millis(5),
            || Ok(self.mirror_state(name)? == "idle"),
        )
    }

    /// Waits until every configured mirror is idle and has run at least once.
    pub fn wait_all_idle(&self, limit: Duration) -> Result<()> {
        self.wait_until(
            "every mirror to be idle after its first sync",
            limit,
            Duration::from_millis(50),
            || {
                let all = self.get_json("/api/mirrors")?;
                let all = all.as_array().context("/api/mirrors is not a list")?;
                Ok(!all.is_empty()
                    && all
                        .iter()
                        .all(|m| m["state"] == "idle" && !m["last_run"].is_null()))
            },
        )
    }

    /// A client with its own keep-alive connection for webhooks to `mirror`.
    pub fn hook_client(&self, mirror: &str) -> HookClient {
        HookClient::new(&self.base, mirror)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends signed GitHub push deliveries to one mirror over one keep-alive
/// connection (ureq's agent pools it once a response is read to the end).
pub struct HookClient {
    agent: ureq::Agent,
    url: String,
    mirror: String,
    /// A delivery that names main without its new id (the load tests send it
    /// as fast as they can; what main points at does not matter to them).
    body: Vec<u8>,
    signature: String,
}

/// A GitHub push delivery naming main, with `after` (the new id, as GitHub
/// sends it) when given.
/// A GitHub push delivery for main; with `moved`, the `(before, after)` ids of a push, as
/// GitHub's carry them.
fn delivery(mirror: &str, moved: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0".repeat(40),
        "repository": { "full_name": format!("bench/{mirror}") },
    });
    if let Some((before, after)) = moved {
        body["before"] = before.into();
        body["after"] = after.into();
    }
    body.to_string().into_bytes()
}

impl HookClient {
    fn new(base: &str, mirror: &str) -> HookClient {
        let body = delivery(mirror, None);
        let signature = format!("sha256={}", hmac_hex(SECRET, &body));
        HookClient {
            agent: ureq::AgentBuilder::new()
                .timeout(HTTP_TIMEOUT)
                .max_idle_connections_per_host(1)
                .build(),
            url: format!("{base}/hooks/{mirror}"),
            mirror: mirror.to_owned(),
            body,
            signature,
        }
    }

    /// POSTs one delivery without the new id and reads the whole response;
    /// returns the status.
    pub fn send(&self) -> Result<u16> {
        self.post(&self.body, &self.signature)
    }

    /// [`HookClient::send_accepted`] for a push that moved main to `after`:
    /// the delivery carries that id, as GitHub's do.
    pub fn send_push_accepted(&self, before: &str, after: &str) -> Result<()> {
        let body = delivery(&self.mirror, Some((before, after)));
        let signature = format!("sha256={}", hmac_hex(SECRET, &body));
        match self.post(&body, &signature)? {
            202 => Ok(()),
            other => bail!("POST {} answered {other}, not 202", self.url),
        }
    }

    fn post(&self, body: &[u8], signature: &str) -> Result<u16> {
        let result = self
            .agent
            .post(&self.url)
            .set("content-type", "application/json")
            .set("x-github-event", "push")
            .set("x-hub-signature-256", signature)
            .send_bytes(body);
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e).with_context(|| format!("POST {} failed", self.url)),
        };
        let status = response.status();
        // Read to the end so the connection goes back to the pool.
        let _ = response.into_string();
        Ok(status)
    }

    /// [`HookClient::send`], failing unless the answer is 202 Accepted.
    pub fn send_accepted(&self) -> Result<()> {
        match self.send()? {
            202 => Ok(()),
            other => bail!("POST {} answered {other}, not 202", self.url),
        }
    }
}

/// Hex HMAC-SHA256 of `body` under `secret` (GitHub's `X-Hub-Signature-256`).
fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Reads `refs/heads/main` of a local bare repo without running git: the
/// loose ref file if there is one, else its line in `packed-refs` (git
/// replaces a loose ref atomically by rename, and writes `packed-refs`
/// before deleting loose refs it packed, so loose-then-packed never misses
/// it). Repos with the reftable backend are read with `git rev-parse`.
pub struct RefReader {
    repo: PathBuf,
    files_backend: bool,
}

impl RefReader {
    pub fn new(repo: &Path) -> RefReader {
        RefReader {
            repo: repo.to_path_buf(),
            files_backend: !repo.join("reftable").exists(),
        }
    }

    pub fn main(&self) -> Result<String> {
        if !self.files_backend {
            return ferry_testkit::git(&self.repo, &["rev-parse", "refs/heads/main"]);
        }
        if let Ok(loose) = fs::read_to_string(self.repo.join("refs/heads/main")) {
            let loose = loose.trim();
            if let Some(target) = loose.strip_prefix("ref: ") {
                bail!(
                    "refs/heads/main of {} is symbolic ({target})",
                    self.repo.display()
                );
            }
            if !loose.is_empty() {
                return Ok(loose.to_owned());
            }
        }
        let packed = fs::read_to_string(self.repo.join("packed-refs")).unwrap_or_default();
        packed
            .lines()
            .find_map(|l| l.strip_suffix(" refs/heads/main"))
            .map(str::to_owned)
            .with_context(|| format!("{} has no refs/heads/main", self.repo.display()))
    }

    /// Polls every `every` until main is `oid`; returns when it saw it.
    pub fn wait_for(&self, oid: &str, every: Duration, limit: Duration) -> Result<Instant> {
        let started = Instant::now();
        loop {
            // A read racing a rename may briefly see no ref: just poll again.
            if self.main().is_ok_and(|m| m == oid) {
                return Ok(Instant::now());
            }
            if started.elapsed() > limit {
                bail!(
                    "{} did not get {oid} on main within {limit:?} (it has {})",
                    self.repo.display(),
                    self.main().unwrap_or_else(|e| format!("{e:#}"))
                );
            }
            thread::sleep(every);
        }
    }
}

/// `VmRSS` and `VmHWM` in KiB from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
    let field = |key: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("{path} has no {key}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

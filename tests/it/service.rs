//! A real `ferry serve` on a free port, driven like its users drive it: signed webhooks from
//! every provider, CodeCommit events, bursts, many mirrors, crashes, polling, reconciliation,
//! permanent failures, notifications, the status page in a real browser.

use crate::harness::{branches_and_tags, ended, servers, Repo, Transport};
use ferry_testkit::{WorkRepo, WRITER};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "hook-s3cret";

/// A running `ferry serve` with its config, data dir and captured logs.
pub struct Serve {
    pub dir: tempfile::TempDir,
    child: Child,
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
    extra_env: Vec<(String, String)>,
}

impl Serve {
    /// Writes `mirrors` (TOML `[[mirror]]` tables; `{SECRET_FILE}` is replaced by a file with
    /// [`SECRET`]) under a `[serve]` section with fast retries (keys `serve_section` sets replace
    /// those defaults), and starts the service.
    pub fn start(serve_section: &str, mirrors: &str) -> Serve {
        Serve::start_with_env(serve_section, mirrors, &[])
    }

    pub fn start_with_env(serve_section: &str, mirrors: &str, env: &[(&str, &str)]) -> Serve {
        Serve::start_full("", serve_section, mirrors, env)
    }

    /// `top` goes before any table (top-level keys such as `timeout`).
    pub fn start_full(
        top: &str,
        serve_section: &str,
        mirrors: &str,
        env: &[(&str, &str)],
    ) -> Serve {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("hook-secret"), SECRET).expect("secret file");
        // The defaults for the keys `serve_section` does not set itself.
        let defaults: String = [
            ("listen", "\"127.0.0.1:0\""),
            ("data_dir", "\"data\""),
            ("retry_base", "\"200ms\""),
            ("retry_max", "\"1s\""),
            ("shutdown_grace", "\"20s\""),
        ]
        .iter()
        .filter(|(key, _)| {
            !serve_section
                .lines()
                .any(|l| l.split('=').next().is_some_and(|k| k.trim() == *key))
        })
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect();
        let config = format!(
            "{top}\n[serve]\n{defaults}{serve_section}\n[defaults]\npoll_interval = \"0\"\nreconcile_interval = \"0\"\n{mirrors}"
        );
        std::fs::write(dir.path().join("ferry.toml"), config).expect("config");
        let extra_env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut serve = Serve {
            dir,
            child: spawn_placeholder(),
            base: String::new(),
            logs: Arc::default(),
            extra_env,
        };
        serve.launch();
        serve
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ferry.toml")
    }

    /// The service's store (`data_dir = "data"` beside the config).
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data").join("ferry.db")
    }

    /// (Re)starts the process on the same config and data dir; waits until it is ready.
    fn launch(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(["serve", "--config"])
            .arg(self.config_path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .env("FERRY_SSH_KEY", servers().ssh_key())
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ferry serve");
        let stderr = child.stderr.take().expect("stderr");
        let logs = self.logs.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ferry serve is ready") {
                    let listen = serde_json::from_str::<Value>(&line)
                        .ok()
                        .and_then(|v| v["listen"].as_str().map(str::to_owned));
                    let _ = tx.send(listen);
                }
                logs.lock().map(|mut l| l.push(line)).ok();
            }
        });
        let listen = rx
            .recv_timeout(Duration::from_secs(20))
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("ferry serve did not become ready; logs:\n{}", self.logs()));
        self.child = child;
        self.base = format!("http://{listen}");
    }

    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// SIGTERM, waits for the process to exit, and starts it again on the same config.
    pub fn restart_gracefully(&mut self) {
        self.terminate();
        self.launch();
    }

    /// SIGTERM, then waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// SIGTERM, then waits up to `limit` for the process to exit: its exit code, or `None`
    /// when it is still running (it is killed when `self` is dropped).
    pub fn terminate_within(&mut self, limit: Duration) -> Option<Option<i32>> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .call()
        {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    pub fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
        let mut req = ureq::post(&format!("{}{path}", self.base)).timeout(Duration::from_secs(10));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let (code, text) = match req.send_bytes(body) {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("POST {path}: {e}"),
        };
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn mirror(&self, name: &str) -> Value {
        let (code, body) = self.get(&format!("/api/mirrors/{name}"));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("mirror json")
    }

    pub fn runs(&self, name: &str) -> Vec<Value> {
        let (code, body) = self.get(&format!("/api/mirrors/{name}/runs?limit=500"));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("runs json")
    }

    /// Polls until `check` holds, or panics with the service's logs.
    pub fn wait(&self, what: &str, limit: Duration, check: impl FnMut() -> bool) {
        self.wait_or_explain(what, limit, check, String::new);
    }

    /// [`Serve::wait`], the panic also saying what `explain` finds then.
    fn wait_or_explain(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut() -> bool,
        explain: impl FnOnce() -> String,
    ) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out after {limit:?} waiting for {what}; {}logs:\n{}",
            explain(),
            self.logs()
        );
    }

    /// Waits until the mirror is idle and its destination holds the source's refs.
    /// On a timeout, the panic shows the mirror and its runs (their errors are not logged).
    pub fn wait_converged(&self, name: &str, src: &Path, dst: &Path) {
        self.wait_or_explain(
            &format!("{name} to converge"),
            Duration::from_secs(30),
            || {
                branches_and_tags(dst) == branches_and_tags(src)
                    && self.mirror(name)["state"] == "idle"
            },
            || {
                format!(
                    "mirror: {}\nruns: {:#}\n",
                    self.mirror(name),
                    Value::Array(self.runs(name))
                )
            },
        );
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn_placeholder() -> Child {
    Command::new("true").spawn().expect("spawn true")
}

pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A push delivery as each provider sends it: headers and body.
pub fn delivery(
    provider: &str,
    refname: &str,
    secret: &str,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let json_ct = ("content-type", "application/json".to_owned());
    let branch = refname.trim_start_matches("refs/heads/");
    let body = match provider {
        "bitbucket_cloud" => json!({ "push": { "changes": [{ "new": { "type": "branch", "name": branch } }] } }),
        "bitbucket_server" => json!({ "eventKey": "repo:refs_changed", "changes": [{ "ref": { "id": refname, "displayId": branch, "type": "BRANCH" } }] }),
        "gitlab" => json!({ "object_kind": "push", "ref": refname }),
        _ => json!({ "ref": refname, "before": "0".repeat(40), "after": "1".repeat(40) }),
    }
    .to_string()
    .into_bytes();
    let sig = hmac_hex(secret, &body);
    let headers = match provider {
        "github" => vec![
            json_ct,
            ("x-github-event", "push".into()),
            ("x-hub-signature-256", format!("sha256={sig}")),
        ],
        "gitlab" => vec![
            json_ct,
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", secret.to_owned()),
        ],
        "gitea" => vec![
            json_ct,
            ("x-gitea-event", "push".into()),
            ("x-gitea-signature", sig),
        ],
        "forgejo" => vec![
            json_ct,
            ("x-forgejo-event", "push".into()),
            ("x-forgejo-signature", sig),
        ],
        "bitbucket_cloud" => vec![
            json_ct,
            ("x-event-key", "repo:push".into()),
            (
                "x-request-uuid",
                "5a0e4c7e-0000-4000-8000-000000000001".into(),
            ),
            ("x-hub-signature", format!("sha256={sig}")),
        ],
        "bitbucket_server" => vec![
            json_ct,
            ("x-event-key", "repo:refs_changed".into()),
            (
                "x-request-id",
                "2a1f2f0e-0000-4000-8000-000000000002".into(),
            ),
            ("x-hub-signature", format!("sha256={sig}")),
        ],
        "generic" => vec![json_ct, ("authorization", format!("Bearer {secret}"))],
        other => panic!("unknown provider {other}"),
    };
    (headers, body)
}

/// An EventBridge "CodeCommit Repository State Change" event.
pub fn codecommit_event(event: &str, branch: &str) -> Vec<u8> {
    json!({
        "version": "0",
        "id": "01234567-0123-0123-0123-012345678901",
        "detail-type": "CodeCommit Repository State Change",
        "source": "aws.codecommit",
        "account": "123456789012",
        "time": "2026-11-30T12:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:codecommit:eu-west-1:123456789012:app"],
        "detail": {
            "callerUserArn": "arn:aws:iam::123456789012:user/dev",
            "commitId": "1".repeat(40),
            "event": event,
            "oldCommitId": "0".repeat(40),
            "referenceFullName": format!("refs/heads/{branch}"),
            "referenceName": branch,
            "referenceType": "branch",
            "repositoryId": "12345678-1234-5678-abcd-12345678abcd",
            "repositoryName": "app"
        }
    })
    .to_string()
    .into_bytes()
}

pub(crate) fn mirror_toml(name: &str, src: &str, dst: &str, extra: &str) -> String {
    format!("[[mirror]]\nname = \"{name}\"\nsource = \"{src}\"\ndestinations = [\"{dst}\"]\nwebhook_secret_file = \"hook-secret\"\n{extra}\n")
}

/// A source with a work repo, and an empty destination, both on the servers.
pub(crate) fn pair(prefix: &str) -> (Repo, Repo) {
    (
        Repo::source(&format!("{prefix}-src")),
        Repo::empty(&format!("{prefix}-dst")),
    )
}

pub(crate) fn push_commit(src: &Repo, msg: &str) {
    src.commit(msg);
    src.push(&["main"]);
}

/// The admin token of the services that [`assert_nothing_was_queued`] checks.
const ADMIN: (&str, &str) = ("ADMIN", "adm1n");
const ADMIN_SETTING: &str = "admin_token_env = \"ADMIN\"";

/// Proves that nothing queued a sync of `name` since it had `runs_before` runs: queues a manual
/// sync and waits until the mirror is idle with every event handled. Had anything been queued
/// before, it would have run on its own (two new runs) or led the manual sync's run (whose
/// trigger is that of its oldest event), so the only new run must be the manual one.
fn assert_nothing_was_queued(serve: &Serve, name: &str, runs_before: usize) {
    let auth = [("authorization", format!("Bearer {}", ADMIN.1))];
    let (code, answer) = serve.post(&format!("/api/mirrors/{name}/sync"), &auth, b"");
    assert_eq!(code, 202, "{answer}");
    serve.wait("the manual sync's run", Duration::from_secs(30), || {
        let m = serve.mirror(name);
        m["state"] != "queued"
            && m["state"] != "syncing"
            && m["behind_since"].is_null()
            && serve.runs(name).len() > runs_before
    });
    let runs = serve.runs(name);
    let triggers: Vec<&str> = runs[..runs.len() - runs_before]
        .iter()
        .filter_map(|r| r["trigger"].as_str())
        .collect();
    assert_eq!(triggers, ["manual"], "only the manual sync ran");
}

#[test]
fn webhooks_from_every_provider_update_the_destination() {
    let (src, dst) = pair("hooks");
    let toml = mirror_toml(
        "app",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start("", &toml);
    serve.wait_converged("app", &src.path(), &dst.path());
    for provider in [
        "github",
        "gitlab",
        "gitea",
        "forgejo",
        "bitbucket_cloud",
        "bitbucket_server",
        "generic",
    ] {
        push_commit(&src, provider);
        let (headers, body) = delivery(provider, "refs/heads/main", SECRET);
        let (code, answer) = serve.post("/hooks/app", &headers, &body);
        assert_eq!(code, 202, "{provider}: {answer}");
        assert_eq!(answer["provider"], provider, "recognised from its headers");
        serve.wait_converged("app", &src.path(), &dst.path());
    }
}

#[test]
fn codecommit_reference_events_sync_and_pull_request_events_do_not() {
    let (src, dst) = pair("cc");
    let toml = mirror_toml(
        "cc",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start_with_env(ADMIN_SETTING, &toml, &[ADMIN]);
    serve.wait_converged("cc", &src.path(), &dst.path());
    for (i, event) in ["referenceCreated", "referenceUpdated", "referenceDeleted"]
        .into_iter()
        .enumerate()
    {
        push_commit(&src, &format!("cc-{i}"));
        let header = if i % 2 == 0 {
            ("x-ferry-token", SECRET.to_owned())
        } else {
            ("authorization", format!("Bearer {SECRET}"))
        };
        let (code, answer) = serve.post("/hooks/cc", &[header], &codecommit_event(event, "main"));
        assert_eq!(code, 202, "{event}: {answer}");
        serve.wait_converged("cc", &src.path(), &dst.path());
    }
    let runs = serve.runs("cc").len();
    push_commit(&src, "not synced by a pull request event");
    let (code, answer) = serve.post(
        "/hooks/cc",
        &[("x-ferry-token", SECRET.to_owned())],
        &codecommit_event("pullRequestCreated", "main"),
    );
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer["ignored"]
            .as_str()
            .unwrap_or("")
            .contains("pullRequestCreated"),
        "{answer}"
    );
    assert_ne!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
    assert_nothing_was_queued(&serve, "cc", runs);
}

#[test]
fn rejected_requests_get_the_right_status_and_queue_nothing() {
    let (src, dst) = pair("reject");
    let toml = mirror_toml(
        "r",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start_with_env(
        &format!("max_body_bytes = 4096\n{ADMIN_SETTING}"),
        &toml,
        &[ADMIN],
    );
    serve.wait_converged("r", &src.path(), &dst.path());
    let runs = serve.runs("r").len();
    push_commit(&src, "nobody announces this properly");

    let (mut headers, body) = delivery("github", "refs/heads/main", SECRET);
    let (wrong, _) = delivery("github", "refs/heads/main", "not-the-secret");
    assert_eq!(
        serve.post("/hooks/r", &wrong, &body).0,
        401,
        "bad signature"
    );
    assert_eq!(
        serve.post("/hooks/r", &headers[..2], &body).0,
        401,
        "missing signature"
    );
    let (code, answer) = serve.post("/hooks/nope", &headers, &body);
    assert_eq!(code, 404, "{answer}");
    let big = vec![b' '; 8192];
    headers[2].1 = format!("sha256={}", hmac_hex(SECRET, &big));
    assert_eq!(serve.post("/hooks/r", &headers, &big).0, 413, "oversize");
    let junk = b"{not json".to_vec();
    headers[2].1 = format!("sha256={}", hmac_hex(SECRET, &junk));
    let (code, answer) = serve.post("/hooks/r", &headers, &junk);
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or("").len() > 10,
        "says what was wrong: {answer}"
    );

    // An accepted event is committed before its answer: had any of these been recorded, the
    // mirror would show it now.
    let m = serve.mirror("r");
    assert_eq!(m["state"], "idle", "{m}");
    assert_eq!(m["behind_since"], Value::Null, "no event was recorded: {m}");
    assert_eq!(serve.runs("r").len(), runs);
    let (_, metrics) = serve.get("/metrics");
    for status in ["401", "404", "413", "400"] {
        assert!(
            metrics.contains(&format!(
                "ferry_webhook_requests_total{{status=\"{status}\"}}"
            )),
            "{metrics}"
        );
    }
    assert_nothing_was_queued(&serve, "r", runs);
}

/// 50 webhooks while a (deliberately slow) sync runs: that sync plus one follow-up.
#[test]
fn a_burst_of_webhooks_coalesces_into_a_few_syncs() {
    let (src, dst) = pair("burst");
    let tools = tempfile::tempdir().unwrap();
    let slow = slow_git(tools.path(), 2);
    let toml = mirror_toml(
        "b",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start_with_env("", &toml, &[("FERRY_GIT", slow.to_str().unwrap())]);
    serve.wait_converged("b", &src.path(), &dst.path());
    let before = serve.runs("b").len();
    push_commit(&src, "burst");
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    let threads: Vec<_> = (0..5)
        .map(|_| {
            let (base, headers, body) = (serve.base.clone(), headers.clone(), body.clone());
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let mut req = ureq::post(&format!("{base}/hooks/b"));
                    for (k, v) in &headers {
                        req = req.set(k, v);
                    }
                    let status = match req.send_bytes(&body) {
                        Ok(r) => r.status(),
                        Err(ureq::Error::Status(code, _)) => code,
                        Err(e) => panic!("{e}"),
                    };
                    assert_eq!(status, 202);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("burst thread");
    }
    // Every webhook was answered, so committed, before this: once the mirror is idle with no
    // event left unhandled, its queue is empty and no further sync can follow.
    serve.wait_converged("b", &src.path(), &dst.path());
    let m = serve.mirror("b");
    assert_eq!(m["behind_since"], Value::Null, "every event handled: {m}");
    let syncs = serve.runs("b").len() - before;
    assert!((1..=3).contains(&syncs), "50 webhooks caused {syncs} syncs");
}

#[test]
fn twenty_mirrors_converge_in_parallel() {
    let pairs: Vec<(Repo, Repo)> = (0..20).map(|_| pair("many")).collect();
    let toml: String = pairs
        .iter()
        .enumerate()
        .map(|(i, (s, d))| {
            mirror_toml(
                &format!("m{i}"),
                &s.url(Transport::File),
                &d.url(Transport::File),
                "",
            )
        })
        .collect();
    let serve = Serve::start("workers = 4", &toml);
    for (i, (s, d)) in pairs.iter().enumerate() {
        serve.wait_converged(&format!("m{i}"), &s.path(), &d.path());
    }
    for (s, _) in &pairs {
        push_commit(s, "again");
    }
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    for i in 0..pairs.len() {
        assert_eq!(serve.post(&format!("/hooks/m{i}"), &headers, &body).0, 202);
    }
    for (i, (s, d)) in pairs.iter().enumerate() {
        serve.wait_converged(&format!("m{i}"), &s.path(), &d.path());
    }
}

/// A git that sleeps before pushing: a sync slow enough to be killed in the middle.
pub(crate) fn slow_git(dir: &Path, seconds: u32) -> PathBuf {
    let path = dir.join("slow-git");
    let real = ferry_testkit::git_binary()
        .expect("git")
        .display()
        .to_string();
    // Writes its pid (the pid the push will have) to `<dir>/pushing` when a push starts
    // waiting: the sync has fetched by then.
    let marker = dir.join("pushing").display().to_string();
    std::fs::write(
        &path,
        format!("#!/bin/sh\nif [ \"$1\" = push ]; then echo $$ > '{marker}.new'; mv '{marker}.new' '{marker}'; sleep {seconds}; fi\nexec '{real}' \"$@\"\n"),
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn kill_9_during_a_sync_loses_nothing() {
    let (src, dst) = pair("crash");
    let tools = tempfile::tempdir().unwrap();
    let slow = slow_git(tools.path(), 30);
    let toml = mirror_toml(
        "c",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let mut serve = Serve::start_with_env("", &toml, &[("FERRY_GIT", slow.to_str().unwrap())]);
    serve.wait("the first sync to start", Duration::from_secs(10), || {
        serve.mirror("c")["state"] == "syncing"
    });
    push_commit(&src, "during the crash");
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    assert_eq!(serve.post("/hooks/c", &headers, &body).0, 202);
    serve.kill9();
    assert!(
        branches_and_tags(&dst.path()).is_empty(),
        "the slow push never happened"
    );
    serve.extra_env.clear();
    serve.restart();
    serve.wait_converged("c", &src.path(), &dst.path());
    let m = serve.mirror("c");
    assert_eq!(
        m["behind_since"],
        Value::Null,
        "every event was handled: {m}"
    );
}

/// A service whose one mirror `name` (file:// both ways, empty destination) is in the middle
/// of its first push, which a slow git holds for `seconds`; and that push's pid.
struct InFirstPush {
    src: Repo,
    dst: Repo,
    serve: Serve,
    push_pid: u32,
    _tools: tempfile::TempDir,
}

fn in_first_push(name: &str, seconds: u32) -> InFirstPush {
    let (src, dst) = pair(name);
    let tools = tempfile::tempdir().unwrap();
    let slow = slow_git(tools.path(), seconds);
    let toml = mirror_toml(
        name,
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start_with_env("", &toml, &[("FERRY_GIT", slow.to_str().unwrap())]);
    let pushing = tools.path().join("pushing");
    serve.wait(
        "the first sync to reach its push",
        Duration::from_secs(10),
        || pushing.exists(),
    );
    let push_pid = std::fs::read_to_string(&pushing)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    InFirstPush {
        src,
        dst,
        serve,
        push_pid,
        _tools: tools,
    }
}

#[test]
fn kill_9_of_the_service_ends_the_git_push_it_was_running() {
    // `_tools` holds the slow git: it must live as long as the service.
    let InFirstPush {
        dst,
        mut serve,
        push_pid,
        _tools,
        ..
    } = in_first_push("orphan", 120);
    assert!(!ended(push_pid), "the push is running before the kill");
    serve.kill9();
    // An orphaned push would go on for two minutes and then push behind the back of
    // whichever node takes the mirror over.
    serve.wait(
        "the push to end with its service",
        Duration::from_secs(10),
        || ended(push_pid),
    );
    assert!(
        branches_and_tags(&dst.path()).is_empty(),
        "the killed service's push never reached the destination"
    );
}

#[test]
fn sigterm_lets_the_running_sync_finish_and_keeps_the_queue() {
    let InFirstPush {
        src,
        dst,
        mut serve,
        _tools,
        ..
    } = in_first_push("t", 3);
    push_commit(&src, "queued during shutdown");
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    assert_eq!(serve.post("/hooks/t", &headers, &body).0, 202);
    assert_eq!(
        serve.terminate(),
        Some(0),
        "clean exit; logs:\n{}",
        serve.logs()
    );
    assert!(
        !branches_and_tags(&dst.path()).is_empty(),
        "the running sync finished before exit"
    );
    assert_ne!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path()),
        "the queued one did not start"
    );
    serve.extra_env.clear();
    serve.restart();
    serve.wait_converged("t", &src.path(), &dst.path());
}

#[test]
fn polling_picks_up_a_push_that_sent_no_webhook() {
    let (src, dst) = pair("poll");
    let toml = mirror_toml(
        "p",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "poll_interval = \"300ms\"",
    );
    let serve = Serve::start("", &toml);
    serve.wait_converged("p", &src.path(), &dst.path());
    push_commit(&src, "silent push");
    serve.wait_converged("p", &src.path(), &dst.path());
    assert!(serve.runs("p").iter().any(|r| r["trigger"] == "poll"));
}

#[test]
fn reconcile_repairs_a_destination_changed_behind_ferrys_back() {
    let (src, dst) = pair("recon");
    let toml = mirror_toml(
        "rc",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "reconcile_interval = \"300ms\"\ndivergence = \"overwrite\"\nprune = \"all\"",
    );
    let serve = Serve::start("", &toml);
    serve.wait_converged("rc", &src.path(), &dst.path());
    // Behind ferry's back: a stray branch and a rewritten main on the destination.
    ferry_testkit::git(
        &dst.path(),
        &["update-ref", "refs/heads/stray", "refs/heads/main"],
    )
    .unwrap();
    let work = WorkRepo::new().unwrap();
    let d = dst.path().display().to_string();
    work.git(&["fetch", "-q", &d, "main:main", "--update-head-ok"])
        .unwrap();
    work.git(&["checkout", "-q", "main"]).unwrap();
    work.commit("oob.txt", "x", "out of band").unwrap();
    work.git(&["push", "-q", &d, "main"]).unwrap();
    serve.wait_converged("rc", &src.path(), &dst.path());
    assert!(serve.runs("rc").iter().any(|r| r["trigger"] == "reconcile"));
}

#[test]
fn a_permanent_error_stops_retries_and_shows_on_the_page() {
    let src = Repo::source("perm-src");
    let dst = Repo::empty("perm-dst");
    // Wrong password: auth, permanent.
    let toml = format!(
        "[[mirror]]\nname = \"broken\"\nsource = \"{}\"\ndestinations = [{{ url = \"{}\", username = \"{}\", password_env = \"WRONG_PASSWORD\" }}]\nwebhook_secret_file = \"hook-secret\"\n",
        src.url(Transport::File),
        dst.url(Transport::Http),
        WRITER.0
    );
    let serve = Serve::start_with_env("", &toml, &[("WRONG_PASSWORD", "not-it")]);
    serve.wait("the mirror to fail", Duration::from_secs(20), || {
        serve.mirror("broken")["state"] == "failing"
    });
    // A retry is scheduled in the same transaction that records the run: a mirror shown
    // failing, not queued, with no retry time, has none coming.
    let m = serve.mirror("broken");
    assert_eq!(m["state"], "failing", "{m}");
    assert_eq!(
        m["retry_at"],
        Value::Null,
        "auth failures are not retried: {m}"
    );
    assert_eq!(serve.runs("broken").len(), 1);
    assert_eq!(m["destinations"][0]["last_error"]["kind"], "auth", "{m}");
    let (code, page) = serve.get("/");
    assert_eq!(code, 200);
    let row_start = page.find("id=\"mirror-broken\"").expect("the mirror's row");
    assert!(
        page[row_start..].contains("failing"),
        "the page shows it failing"
    );
    assert!(page.contains("data-state=\"failing\""));

    // A new event is a new chance: it runs again (and fails again).
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    assert_eq!(serve.post("/hooks/broken", &headers, &body).0, 202);
    serve.wait("a second run", Duration::from_secs(20), || {
        serve.runs("broken").len() == 2 && serve.mirror("broken")["state"] == "failing"
    });
    let m = serve.mirror("broken");
    assert_eq!(m["retry_at"], Value::Null, "{m}");
    assert!(
        serve.runs("broken").iter().all(|r| r["trigger"] != "retry"),
        "no retry ran"
    );
}

#[test]
fn transient_errors_are_retried_until_they_clear() {
    let src = Repo::source("transient-src");
    let dst = Repo::empty("transient-dst");
    // A git daemon behind a proxy that stalls: timeouts (transient) until it forwards again.
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], servers().git_daemon_port()));
    let proxy = ferry_testkit::TcpProxy::start(target, ferry_testkit::ProxyMode::Stall).unwrap();
    let url = format!("git://127.0.0.1:{}/{}.git", proxy.port(), dst.name);
    let toml = mirror_toml("tr", &src.url(Transport::File), &url, "");
    let serve = Serve::start_full("timeout = \"1s\"", "", &toml, &[]);
    serve.wait("a failed attempt", Duration::from_secs(20), || {
        !serve.runs("tr").is_empty()
    });
    assert!(
        serve.mirror("tr")["retry_at"].is_i64() || serve.runs("tr").len() > 1,
        "a retry is scheduled"
    );
    proxy.set_mode(ferry_testkit::ProxyMode::Forward);
    serve.wait("the retry to succeed", Duration::from_secs(30), || {
        serve.mirror("tr")["state"] == "idle"
    });
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
    assert!(serve.runs("tr").iter().any(|r| r["trigger"] == "retry"));
}

/// A tiny HTTP server that records POSTed JSON bodies.
struct Catcher {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Catcher {
    fn start() -> Catcher {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                if let Ok(v) = serde_json::from_slice(&body) {
                    sink.lock().map(|mut b| b.push(v)).ok();
                }
                let mut stream = reader.into_inner();
                let _ = stream.write_all(
                    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Catcher { port, bodies }
    }

    fn events(&self) -> Vec<String> {
        self.bodies
            .lock()
            .map(|b| {
                b.iter()
                    .map(|v| v["event"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[test]
fn one_notification_per_failure_streak_and_one_on_recovery() {
    let src = Repo::source("notify-src");
    let missing = tempfile::tempdir().unwrap();
    let dst = missing.path().join("later.git");
    let catcher = Catcher::start();
    let toml = mirror_toml(
        "n",
        &src.url(Transport::File),
        &dst.display().to_string(),
        "",
    );
    let mut serve = Serve::start(
        &format!(
            "notify_url = \"http://127.0.0.1:{}/ferry\"\nnotify_after = 2",
            catcher.port
        ),
        &toml,
    );
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    // Four failed runs in a row (the destination does not exist: not_found, permanent).
    for run in 1..=4 {
        if run > 1 {
            assert_eq!(serve.post("/hooks/n", &headers, &body).0, 202);
        }
        serve.wait(
            &format!("failed run {run}"),
            Duration::from_secs(20),
            || serve.runs("n").len() == run && serve.mirror("n")["state"] == "failing",
        );
    }
    // A run's task ends only once its notification is answered, and SIGTERM lets the running
    // tasks end: after the exit, every notification of these runs has been received.
    assert_eq!(
        serve.terminate(),
        Some(0),
        "clean exit; logs:\n{}",
        serve.logs()
    );
    assert_eq!(catcher.events(), ["failing"], "one per streak");
    serve.restart();
    ferry_testkit::git(missing.path(), &["init", "-q", "--bare", "later.git"]).unwrap();
    assert_eq!(serve.post("/hooks/n", &headers, &body).0, 202);
    serve.wait_converged("n", &src.path(), &dst);
    serve.wait("the recovery notification", Duration::from_secs(10), || {
        catcher.events() == ["failing", "recovered"]
    });
}

#[test]
fn manual_sync_needs_the_admin_token() {
    let (src, dst) = pair("manual");
    let toml = mirror_toml(
        "man",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start_with_env("admin_token_env = \"ADMIN\"", &toml, &[("ADMIN", "adm1n")]);
    serve.wait_converged("man", &src.path(), &dst.path());
    push_commit(&src, "manual");
    assert_eq!(serve.post("/api/mirrors/man/sync", &[], b"").0, 401);
    assert_eq!(
        serve
            .post(
                "/api/mirrors/man/sync",
                &[("authorization", "Bearer wrong".into())],
                b""
            )
            .0,
        401
    );
    assert_eq!(
        serve
            .post(
                "/api/mirrors/zzz/sync",
                &[("authorization", "Bearer adm1n".into())],
                b""
            )
            .0,
        404
    );
    assert_eq!(
        serve
            .post(
                "/api/mirrors/man/sync",
                &[("authorization", "Bearer adm1n".into())],
                b""
            )
            .0,
        202
    );
    serve.wait_converged("man", &src.path(), &dst.path());
    assert!(serve.runs("man").iter().any(|r| r["trigger"] == "manual"));
}

#[test]
fn status_and_runs_commands_work_with_the_service_up_and_down() {
    let (src, dst) = pair("statuscmd");
    let toml = mirror_toml(
        "sc",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let mut serve = Serve::start("", &toml);
    serve.wait_converged("sc", &src.path(), &dst.path());
    let ferry = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .output()
            .expect("run ferry");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cfg = serve.config_path().display().to_string();
    // The config says port 0; point the commands at the running service.
    let listen = serve.base.trim_start_matches("http://").to_owned();
    let (code, out, err) = ferry(&["status", "--config", &cfg, "--listen", &listen]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("sc") && out.contains("in sync"), "{out}");
    let (code, out, _) = ferry(&["runs", "sc", "--config", &cfg, "--listen", &listen]);
    assert_eq!(code, Some(0));
    assert!(out.contains("config"), "the first run's trigger: {out}");
    serve.kill9();
    let (code, out, err) = ferry(&["status", "--config", &cfg, "--listen", &listen]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("sc") && err.contains("does not answer"),
        "{out}{err}"
    );
}

#[test]
fn the_status_page_renders_in_a_real_browser() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed: run scripts/test.sh (it installs Debian's chromium)");
    let (src, dst) = pair("page");
    let broken = Repo::source("page-broken-src");
    let mut toml = mirror_toml(
        "healthy",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    toml.push_str(&mirror_toml(
        "broken",
        &broken.url(Transport::File),
        "/nonexistent/ferry/dest.git",
        "",
    ));
    let serve = Serve::start("", &toml);
    serve.wait_converged("healthy", &src.path(), &dst.path());
    serve.wait("broken to fail", Duration::from_secs(20), || {
        serve.mirror("broken")["state"] == "failing"
    });
    let profile = tempfile::tempdir().unwrap();
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ferry-status-page.png");
    let _ = std::fs::remove_file(&shot);
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ];
    let user_data = format!("--user-data-dir={}", profile.path().display());
    let dom = Command::new(chromium)
        .args(flags)
        .arg(&user_data)
        .arg("--dump-dom")
        .arg(format!("{}/", serve.base))
        .output()
        .expect("chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("id=\"mirror-broken\""),
        "the page loaded: {dom}"
    );
    let row = &dom[dom.find("id=\"mirror-broken\"").unwrap_or(0)..];
    assert!(
        row.contains("data-state=\"failing\"") || row[..row.len().min(400)].contains("failing"),
        "broken shows as failing"
    );
    let healthy = &dom[dom.find("id=\"mirror-healthy\"").expect("healthy row")..];
    assert!(
        healthy.contains("data-state=\"idle\""),
        "healthy shows in sync"
    );
    let out = Command::new(chromium)
        .args(flags)
        .arg(&user_data)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{}/", serve.base))
        .output()
        .expect("chromium screenshot");
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot at {}",
        shot.display()
    );
}

#[test]
fn a_second_service_on_the_same_data_dir_is_refused() {
    let (src, dst) = pair("twice");
    let toml = mirror_toml(
        "tw",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start("", &toml);
    serve.wait_converged("tw", &src.path(), &dst.path());
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config"])
        .arg(serve.config_path())
        .output()
        .expect("run a second ferry serve");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already using the data directory"),
        "{stderr}"
    );
    assert_eq!(
        serve.mirror("tw")["state"],
        "idle",
        "the first one is unaffected"
    );
}

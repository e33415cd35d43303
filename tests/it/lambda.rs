//! ferry as a Lambda function, end to end: the real binary as a custom runtime against
//! cargo-lambda's Runtime API emulator on loopback, invoked with EventBridge and Function URL
//! payloads, syncing between the real git servers.

use crate::fleets::Fleet;
use crate::harness::{branches_and_tags, free_port, Repo, Transport};
use crate::moto::Moto;
use crate::service::{codecommit_event, delivery, SECRET};
use ferry_testkit::WRITER;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// cargo-lambda's emulator plus one ferry function process attached to it.
struct LambdaRig {
    emulator: Child,
    function: Child,
    port: u16,
    pub cache: tempfile::TempDir,
    events: tempfile::TempDir,
}

fn cargo_lambda() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("lambda");
    cmd
}

impl LambdaRig {
    fn start(env: &[(&str, String)]) -> LambdaRig {
        assert!(
            cargo_lambda()
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "cargo-lambda is not installed: run scripts/test.sh (it installs it with pip)"
        );
        let port = free_port();
        let mut emulator = cargo_lambda()
            .args([
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cargo lambda watch");
        // Ready once it says so (it prints to stdout or stderr depending on the version).
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            emulator
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            emulator
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("starting Runtime server") {
                        let _ = tx.send(());
                    }
                }
            });
        }
        rx.recv_timeout(Duration::from_secs(60))
            .expect("cargo lambda watch did not start its Runtime API");
        let cache = tempfile::tempdir().expect("cache dir");
        let events = tempfile::tempdir().expect("events dir");
        let log = std::fs::File::create(events.path().join("function.log")).expect("log file");
        let function = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("FERRY_CACHE_DIR", cache.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start the function");
        LambdaRig {
            emulator,
            function,
            port,
            cache,
            events,
        }
    }

    /// What the function wrote to stdout and stderr (its logs) so far.
    fn logs(&self) -> String {
        std::fs::read_to_string(self.events.path().join("function.log")).unwrap_or_default()
    }

    /// The function's log lines so far, parsed (ferry logs JSON lines when not at a terminal).
    fn log_lines(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Invokes the function with `event`; `Ok(response)` or `Err(error text)`.
    fn invoke(&self, event: &Value) -> Result<Value, String> {
        let file = self.events.path().join("event.json");
        std::fs::write(&file, event.to_string()).expect("write event");
        let out = cargo_lambda()
            .args([
                "invoke",
                "-A",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "--data-file",
            ])
            .arg(&file)
            .arg("_")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo lambda invoke");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(serde_json::from_str(&stdout).unwrap_or(Value::String(stdout)))
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// The cache repository's marker file: written once, when the cache is created.
    fn cache_marker(&self) -> Option<(u64, std::time::SystemTime)> {
        use std::os::unix::fs::MetadataExt;
        let dir: PathBuf = std::fs::read_dir(self.cache.path())
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "git"))?;
        let meta = std::fs::metadata(dir.join("ferry-cache")).ok()?;
        Some((meta.ino(), meta.modified().ok()?))
    }
}

impl Drop for LambdaRig {
    fn drop(&mut self) {
        let _ = self.function.kill();
        let _ = self.function.wait();
        let _ = self.emulator.kill();
        let _ = self.emulator.wait();
    }
}

/// The classic function's environment, pointing at real HTTP repositories.
fn classic_env(src: &Repo, dst: &Repo) -> Vec<(&'static str, String)> {
    vec![
        ("SRC_REPO", src.url(Transport::Http)),
        ("SRC_USER", WRITER.0.to_owned()),
        ("SRC_PASS", WRITER.1.to_owned()),
        ("DEST_REPO", dst.url(Transport::Http)),
        ("DEST_USER", WRITER.0.to_owned()),
        ("DEST_PASS", WRITER.1.to_owned()),
        ("FERRY_WEBHOOK_SECRET", SECRET.to_owned()),
    ]
}

fn event(payload: Vec<u8>) -> Value {
    serde_json::from_slice(&payload).expect("event json")
}

/// EventBridge's scheduled event: reconcile every mirror.
fn scheduled() -> Value {
    json!({
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-30T12:00:00Z", "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/ferry-reconcile"], "detail": {}
    })
}

/// One ref's outcome in an invocation's response (the first mirror's first destination).
fn outcome(response: &Value, name: &str) -> String {
    response["mirrors"][0]["destinations"][0]["refs"]
        .as_array()
        .and_then(|refs| refs.iter().find(|r| r["ref"] == name))
        .and_then(|r| r["outcome"].as_str())
        .unwrap_or_else(|| panic!("no outcome for {name}: {response}"))
        .to_owned()
}

fn codecommit(kind: &str, repository: &str) -> Value {
    let mut e = event(codecommit_event(kind, "main"));
    e["detail"]["repositoryName"] = json!(repository);
    e
}

#[test]
fn codecommit_events_sync_and_a_warm_invocation_reuses_the_cache() {
    let (src, dst) = (Repo::source("lam-src"), Repo::empty("lam-dst"));
    let rig = LambdaRig::start(&classic_env(&src, &dst));
    let response = rig
        .invoke(&codecommit("referenceCreated", &src.name))
        .expect("invocation");
    assert_eq!(response["ok"], true, "{response}");
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
    let cold = rig.cache_marker().expect("a cache in FERRY_CACHE_DIR");

    for kind in ["referenceUpdated", "referenceDeleted"] {
        src.commit(kind);
        src.push(&["main"]);
        rig.invoke(&codecommit(kind, &src.name))
            .expect("invocation");
        assert_eq!(
            branches_and_tags(&dst.path()),
            branches_and_tags(&src.path()),
            "{kind}"
        );
    }
    assert_eq!(
        rig.cache_marker(),
        Some(cold),
        "warm invocations reuse the cache instead of cloning again"
    );

    // A pull request event changes no reference: acknowledged, nothing synced.
    src.commit("not for a pull request event");
    src.push(&["main"]);
    let mut pr = codecommit("pullRequestCreated", &src.name);
    pr["detail-type"] = json!("CodeCommit Pull Request State Change");
    let response = rig.invoke(&pr).expect("an ignored event is not a failure");
    assert!(
        response["ignored"]
            .as_str()
            .unwrap_or("")
            .contains("pullRequestCreated"),
        "{response}"
    );
    assert_ne!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );

    // The scheduled reconciliation catches it up.
    rig.invoke(&scheduled()).expect("reconciliation");
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

/// A CodeCommit reference event names one ref: the invocation syncs that ref only, and the
/// next scheduled reconcile brings the rest.
#[test]
fn a_codecommit_event_syncs_only_the_ref_it_names() {
    let (src, dst) = (Repo::source("lamfocus-src"), Repo::empty("lamfocus-dst"));
    src.git(&["branch", "dev"]);
    src.push(&["main", "dev"]);
    let rig = LambdaRig::start(&classic_env(&src, &dst));
    rig.invoke(&scheduled()).expect("first sync");
    let old_dev = dst.refs()["refs/heads/dev"].clone();

    src.commit("main moves");
    src.git(&["checkout", "-q", "dev"]);
    src.commit("dev moves");
    src.git(&["checkout", "-q", "main"]);
    src.push(&["main", "dev"]);
    let response = rig
        .invoke(&codecommit("referenceUpdated", &src.name))
        .expect("invocation");
    assert_eq!(response["ok"], true, "{response}");
    assert_eq!(outcome(&response, "refs/heads/main"), "updated");
    let refs: Vec<&str> = response["mirrors"][0]["destinations"][0]["refs"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["ref"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(refs, ["refs/heads/main"], "{response}");
    assert_eq!(dst.refs()["refs/heads/main"], src.refs()["refs/heads/main"]);
    assert_eq!(dst.refs()["refs/heads/dev"], old_dev, "dev was not named");

    rig.invoke(&scheduled()).expect("reconciliation");
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn a_scheduled_reconcile_reports_a_failing_mirror_without_failing_the_healthy_ones() {
    let (src, dst) = (Repo::source("lamrec-src"), Repo::empty("lamrec-dst"));
    let missing = tempfile::tempdir().expect("temp dir");
    let broken_dst = missing.path().join("absent.git");
    let config = format!(
        "[[mirror]]\nname = \"broken\"\nsource = \"{src}\"\ndestinations = [\"{broken}\"]\n\
         [[mirror]]\nname = \"healthy\"\nsource = \"{src}\"\ndestinations = [\"{dst}\"]\n",
        src = src.url(Transport::File),
        broken = broken_dst.display(),
        dst = dst.url(Transport::File),
    );
    let rig = LambdaRig::start(&[("FERRY_CONFIG", config)]);
    // A failed invocation would make Lambda run the whole reconcile twice more.
    let response = rig
        .invoke(&scheduled())
        .expect("the invocation succeeds: only a mirror failed");
    assert_eq!(response["ok"], false, "{response}");
    assert_eq!(response["trigger"], "reconcile", "{response}");
    let failed: Vec<&str> = response["failed"]
        .as_array()
        .map(|f| f.iter().filter_map(|m| m["mirror"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(failed, ["broken"], "{response}");
    assert!(
        response["failed"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not_found") || e.contains("absent.git")),
        "says why: {response}"
    );
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path()),
        "the healthy mirror is synced"
    );
    let errors: Vec<Value> = rig
        .log_lines()
        .into_iter()
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one error line per failing mirror: {errors:?}"
    );
    assert_eq!(errors[0]["mirror"], "broken", "{errors:?}");
}

#[test]
fn a_failing_destination_fails_the_invocation() {
    let (src, dst) = (Repo::source("lamfail-src"), Repo::empty("lamfail-dst"));
    let mut env = classic_env(&src, &dst);
    env.retain(|(k, _)| *k != "DEST_PASS");
    env.push(("DEST_PASS", "wr0ng-Pa55-zq".to_owned()));
    let rig = LambdaRig::start(&env);
    let error = rig
        .invoke(&codecommit("referenceUpdated", &src.name))
        .expect_err("the invocation must fail");
    assert!(error.contains("auth"), "says why: {error}");
    assert!(
        !error.contains("wr0ng-Pa55-zq"),
        "no secret in the error: {error}"
    );
    let error = rig
        .invoke(&json!({ "mirror": "nope" }))
        .expect_err("unknown mirror");
    assert!(error.contains("no mirror named 'nope'"), "{error}");
}

/// A Function URL request (API Gateway HTTP API payload 2.0).
fn function_url_request(path: &str, headers: &[(&str, String)], body: &[u8]) -> Value {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "abcdefghij", "domainName": "abcdefghij.lambda-url.eu-west-1.on.aws",
            "http": { "method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "GitHub-Hookshot/1" },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "routeKey": "$default", "stage": "$default",
            "time": "30/Nov/2026:12:00:00 +0000", "timeEpoch": 1796040000000u64
        },
        "body": base64_encode(body),
        "isBase64Encoded": true
    })
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn function_url_webhooks_are_checked_like_the_service_does() {
    let (src, dst) = (Repo::source("lamurl-src"), Repo::empty("lamurl-dst"));
    let mut env = classic_env(&src, &dst);
    env.push(("FERRY_MIRROR", "app".to_owned()));
    let rig = LambdaRig::start(&env);
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    let response = rig
        .invoke(&function_url_request("/hooks/app", &headers, &body))
        .expect("invocation");
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );

    let (bad, _) = delivery("github", "refs/heads/main", "not-the-secret");
    let response = rig
        .invoke(&function_url_request("/hooks/app", &bad, &body))
        .expect("invocation");
    assert_eq!(response["statusCode"], 401, "{response}");
    let response = rig
        .invoke(&function_url_request("/hooks/other", &headers, &body))
        .expect("invocation");
    assert_eq!(response["statusCode"], 404, "{response}");
}

const STATE_BUCKET: &str = "ferry-state";

/// The classic environment plus a state bucket in moto's S3.
fn stateful_env(src: &Repo, dst: &Repo, moto: &Moto) -> Vec<(&'static str, String)> {
    moto.create_bucket(STATE_BUCKET);
    let mut env = classic_env(src, dst);
    env.extend(moto.env());
    env.push(("FERRY_STATE_BUCKET", STATE_BUCKET.to_owned()));
    env.push(("FERRY_STATE_PREFIX", "records".to_owned()));
    env
}

#[test]
fn a_cold_start_keeps_the_sync_state_in_the_bucket() {
    let moto = Moto::start();
    let (src, dst) = (Repo::source("lamcold-src"), Repo::empty("lamcold-dst"));
    src.git(&["branch", "feature"]);
    src.push(&["feature"]);
    let env = stateful_env(&src, &dst, &moto);
    {
        let rig = LambdaRig::start(&env);
        rig.invoke(&scheduled()).expect("first sync");
        assert_eq!(
            branches_and_tags(&dst.path()),
            branches_and_tags(&src.path())
        );
    } // the execution environment goes away, and its /tmp with it
    let keys = moto.keys(STATE_BUCKET);
    assert!(
        keys.len() == 1 && keys[0].starts_with("records/"),
        "one record, under the prefix: {keys:?}"
    );

    // Upstream deletes a branch and force-pushes another.
    src.push(&[":refs/heads/feature"]);
    src.git(&["commit", "--amend", "-q", "-m", "rewritten upstream"]);
    src.push(&["main"]);

    // A cold start: a new execution environment with an empty cache directory.
    let rig = LambdaRig::start(&env);
    let response = rig
        .invoke(&scheduled())
        .expect("the cold start syncs (nothing reported diverged)");
    assert_eq!(
        outcome(&response, "refs/heads/main"),
        "forced",
        "{response}"
    );
    assert_eq!(
        outcome(&response, "refs/heads/feature"),
        "deleted",
        "{response}"
    );
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn a_record_changed_by_another_writer_meanwhile_is_merged_not_clobbered() {
    let moto = Moto::start();
    let (src, dst) = (Repo::source("lamrace-src"), Repo::empty("lamrace-dst"));
    let rig = LambdaRig::start(&stateful_env(&src, &dst, &moto));
    rig.invoke(&scheduled()).expect("first sync");
    let keys = moto.keys(STATE_BUCKET);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];

    // The next push waits in the destination's pre-receive hook until the test says go: by
    // then the run has read the record, and another writer changes it.
    let gate = tempfile::tempdir().expect("gate dir");
    let (entered, go) = (gate.path().join("entered"), gate.path().join("go"));
    let hook = dst.path().join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ntouch '{}'\ni=0\nwhile [ ! -e '{}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n",
            entered.display(),
            go.display()
        ),
    )
    .expect("write the hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let new = src.commit("while another writer saves");
    src.push(&["main"]);

    let response = std::thread::scope(|scope| {
        let invocation = scope.spawn(|| rig.invoke(&scheduled()));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !entered.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the push never reached the hook"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut record: Value =
            serde_json::from_str(&moto.get(STATE_BUCKET, key)).expect("record json");
        record["refs"]["refs/heads/elsewhere"] = json!("e".repeat(40));
        moto.put(STATE_BUCKET, key, &record.to_string());
        std::fs::write(&go, b"").expect("open the gate");
        invocation.join().expect("invocation thread")
    })
    .expect("the invocation succeeds");
    assert_eq!(
        outcome(&response, "refs/heads/main"),
        "updated",
        "{response}"
    );

    let record: Value = serde_json::from_str(&moto.get(STATE_BUCKET, key)).expect("record json");
    assert_eq!(
        record["refs"]["refs/heads/elsewhere"],
        json!("e".repeat(40)),
        "the other writer's entry survives: {record}"
    );
    assert_eq!(
        record["refs"]["refs/heads/main"],
        json!(new),
        "this run's change is in: {record}"
    );
}

#[test]
fn a_record_another_writer_rewrote_loses_its_settled_stamp_and_is_read_again() {
    let moto = Moto::start();
    let (src, dst) = (Repo::source("lamstamp-src"), Repo::empty("lamstamp-dst"));
    let rig = LambdaRig::start(&stateful_env(&src, &dst, &moto));
    rig.invoke(&scheduled()).expect("first sync");
    let keys = moto.keys(STATE_BUCKET);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert!(
        moto.metadata(STATE_BUCKET, key, "ferry-settled").is_some(),
        "the destination holds exactly the source's refs: the record is settled"
    );

    // Another writer drops main's entry, writing the record without the stamp. A run that
    // took the old stamp for true would leave the entry missing; reading the record, it
    // finds main at the source's value on the destination and records it again.
    let mut record: Value =
        serde_json::from_str(&moto.get(STATE_BUCKET, key)).expect("record json");
    let main = record["refs"]["refs/heads/main"].clone();
    assert!(main.is_string(), "{record}");
    record["refs"]
        .as_object_mut()
        .expect("refs")
        .remove("refs/heads/main");
    moto.put(STATE_BUCKET, key, &record.to_string());
    assert_eq!(moto.metadata(STATE_BUCKET, key, "ferry-settled"), None);

    let response = rig.invoke(&scheduled()).expect("a no-op");
    assert_eq!(
        outcome(&response, "refs/heads/main"),
        "unchanged",
        "{response}"
    );
    let record: Value = serde_json::from_str(&moto.get(STATE_BUCKET, key)).expect("record json");
    assert_eq!(record["refs"]["refs/heads/main"], main, "{record}");
    assert!(moto.metadata(STATE_BUCKET, key, "ferry-settled").is_some());
}

#[test]
fn a_codecommit_events_old_commit_stands_in_for_a_missing_record() {
    let (src, dst) = (Repo::source("lamold-src"), Repo::empty("lamold-dst"));
    // Something else (the classic function) kept the destination in sync: no record of it.
    let old = src.git(&["rev-parse", "HEAD"]).trim().to_owned();
    src.git(&["push", "-q", &dst.path().display().to_string(), "main"]);
    src.git(&["commit", "--amend", "-q", "-m", "rewritten upstream"]);
    src.push(&["main"]);
    let new = src.git(&["rev-parse", "HEAD"]).trim().to_owned();

    let rig = LambdaRig::start(&classic_env(&src, &dst));
    let mut event = codecommit("referenceUpdated", &src.name);
    event["detail"]["oldCommitId"] = json!(old);
    event["detail"]["commitId"] = json!(new);
    let response = rig
        .invoke(&event)
        .expect("the destination held the old commit: the force-push is followed");
    assert_eq!(
        outcome(&response, "refs/heads/main"),
        "forced",
        "{response}"
    );
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn passwords_come_from_secrets_manager_once_per_cold_start_and_appear_nowhere() {
    let moto = Moto::start();
    let (src, dst) = (Repo::source("lamsecret-src"), Repo::empty("lamsecret-dst"));
    // The source's password is a whole secret, named; the destination's a key of a JSON
    // secret, by ARN.
    moto.create_secret("ferry/source", WRITER.1);
    let arn = moto.create_secret(
        "ferry/passwords",
        &json!({ "destination_password": WRITER.1 }).to_string(),
    );
    let mut env = classic_env(&src, &dst);
    env.retain(|(k, _)| !k.ends_with("_PASS"));
    env.extend(moto.env());
    env.push(("FERRY_SOURCE_PASSWORD_SECRET", "ferry/source".to_owned()));
    env.push((
        "FERRY_DEST_PASSWORD_SECRET",
        format!("{arn}#destination_password"),
    ));
    env.push(("FERRY_LOG", "debug".to_owned()));
    let rig = LambdaRig::start(&env);
    let response = rig
        .invoke(&codecommit("referenceUpdated", &src.name))
        .expect("syncs with the passwords from the secrets");
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );

    // Read once per execution environment: a warm invocation keeps the value of its cold
    // start, a new environment reads the secret again.
    moto.put_secret_value("ferry/source", "wr0ng-Pa55-zq");
    src.commit("after the rotation");
    src.push(&["main"]);
    rig.invoke(&codecommit("referenceUpdated", &src.name))
        .expect("a warm invocation uses the password read at the cold start");
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
    let cold = LambdaRig::start(&env);
    let error = cold
        .invoke(&codecommit("referenceUpdated", &src.name))
        .expect_err("a cold start reads the rotated (wrong) password");
    assert!(error.contains("auth"), "says why: {error}");

    for (what, text) in [
        ("the response", response.to_string()),
        ("the error", error),
        ("the logs", rig.logs()),
        ("the cold start's logs", cold.logs()),
    ] {
        assert!(
            !text.contains(WRITER.1) && !text.contains("wr0ng-Pa55-zq"),
            "a password in {what}: {text}"
        );
    }
    assert!(
        rig.logs().contains("ferry/source"),
        "the logs say which secret was read: {}",
        rig.logs()
    );
}

/// A fleet function: every bare repository below a directory to a backup directory, with
/// the inventory in the state bucket (`FERRY_CONFIG` given inline).
fn fleet_env(fleet: &Fleet, moto: &Moto) -> Vec<(&'static str, String)> {
    moto.create_bucket(STATE_BUCKET);
    let config = fleet.directory_config("on_source_deleted = \"delete\"");
    let mut env = moto.env();
    env.push((
        "FERRY_CONFIG",
        std::fs::read_to_string(config).expect("read the config"),
    ));
    env.push(("FERRY_STATE_BUCKET", STATE_BUCKET.to_owned()));
    env.push(("FERRY_STATE_PREFIX", "state".to_owned()));
    env
}

fn synced_names(response: &Value) -> Vec<String> {
    response["mirrors"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_fleet_function_routes_codecommit_events_to_members_discovers_new_ones_and_keeps_its_inventory_across_cold_starts(
) {
    let moto = Moto::start();
    let fleet = Fleet::new(&["app.git", "lib.git"]);
    let env = fleet_env(&fleet, &moto);
    {
        let rig = LambdaRig::start(&env);
        let response = rig
            .invoke(&codecommit("referenceUpdated", "app"))
            .expect("the event for app syncs its member");
        assert_eq!(synced_names(&response), ["acme/app"], "{response}");
        assert_eq!(response["fleet_problems"], json!([]), "{response}");
        assert_eq!(
            branches_and_tags(&fleet.backup().join("app.git")),
            branches_and_tags(&fleet.source().join("app.git"))
        );
        assert!(
            !fleet.backup().join("lib.git").exists(),
            "an event for app synced lib too"
        );
        assert!(
            moto.keys(STATE_BUCKET)
                .contains(&"state/fleets/acme.json".to_owned()),
            "the inventory is not in the bucket: {:?}",
            moto.keys(STATE_BUCKET)
        );

        // A repository created after the discovery: its event makes the warm function
        // discover again, and it is synced.
        fleet.add("later.git");
        let response = rig
            .invoke(&codecommit("referenceCreated", "later"))
            .expect("the event for a new repository");
        assert_eq!(synced_names(&response), ["acme/later"], "{response}");
        assert_eq!(
            branches_and_tags(&fleet.backup().join("later.git")),
            branches_and_tags(&fleet.source().join("later.git"))
        );

        // An event for a repository no fleet has fails the invocation and says so.
        let err = rig
            .invoke(&codecommit("referenceUpdated", "nowhere"))
            .expect_err("an event for an unknown repository");
        assert!(err.contains("no fleet has it"), "{err}");
    } // the execution environment goes away, and its /tmp with it

    // The source loses app. A cold start's scheduled reconcile knows app from the inventory
    // in the bucket, confirms it is gone, and deletes its backup as the fleet asks.
    std::fs::remove_dir_all(fleet.source().join("app.git")).expect("delete app");
    let rig = LambdaRig::start(&env);
    let response = rig.invoke(&scheduled()).expect("the scheduled reconcile");
    assert_eq!(response["ok"], true, "{response}");
    assert_eq!(
        synced_names(&response),
        ["acme/later", "acme/lib"],
        "{response}"
    );
    assert!(
        !fleet.backup().join("app.git").exists(),
        "the cold start forgot the member whose source was deleted: {response}"
    );
    assert_eq!(
        branches_and_tags(&fleet.backup().join("lib.git")),
        branches_and_tags(&fleet.source().join("lib.git"))
    );
}

#[test]
fn a_codecommit_fleet_function_syncs_the_member_an_event_names_by_repository_id() {
    use ferry_testkit::codecommit::{CodeCommitFake, FakeOptions, RepoSpec};
    let cc = CodeCommitFake::start(crate::harness::servers(), FakeOptions::default())
        .expect("start the fake CodeCommit");
    let mut repos = Vec::new();
    for name in ["app", "lib"] {
        let repo = cc.add_repo(name, RepoSpec::default()).expect("add repo");
        let work = ferry_testkit::WorkRepo::new().expect("work repo");
        work.commit("f.txt", name, name).expect("commit");
        work.git(&[
            "push",
            "-q",
            &repo.path.display().to_string(),
            "HEAD:refs/heads/main",
        ])
        .expect("push");
        repos.push(repo);
    }
    let backup = tempfile::tempdir().expect("backup dir");
    let (username, password) = cc.git_credentials();
    let config = format!(
        "[[fleet]]\nname = \"cc\"\nsource = {{ provider = \"codecommit\", region = \"{}\", username = \"{username}\", password_env = \"CC_GIT_PASSWORD\" }}\n\
         destination = {{ provider = \"directory\", path = \"{}\", create = true }}\n",
        cc.region(),
        backup.path().display()
    );
    let mut env: Vec<(&str, String)> = vec![
        ("FERRY_CONFIG", config),
        ("CC_GIT_PASSWORD", password.to_owned()),
    ];
    let sdk = cc.sdk_env();
    env.extend(sdk.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let rig = LambdaRig::start(&env);

    let mut event = codecommit("referenceUpdated", "renamed-since");
    event["detail"]["repositoryId"] = json!(repos[1].id);
    let response = rig.invoke(&event).expect("the event for lib");
    assert_eq!(synced_names(&response), ["cc/lib"], "{response}");
    assert_eq!(
        branches_and_tags(&backup.path().join("lib")),
        branches_and_tags(&repos[1].path)
    );
    assert!(!backup.path().join("app").exists(), "app synced too");
    assert!(
        !rig.logs().contains(password),
        "the git password was logged"
    );
    assert!(cc.violations().is_empty(), "{:#?}", cc.violations());
}

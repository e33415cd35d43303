//! What `ferry serve` promises when something goes wrong around a sync rather than in it: a
//! run whose result cannot be recorded does not leave its mirror stuck in "syncing".

use crate::harness::{Repo, Transport};
use crate::service::{delivery, mirror_toml, pair, push_commit, slow_git, Serve, SECRET};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Another process holding the write lock of the service's store, as a backup tool or an
/// `sqlite3` shell in a transaction does: every write of the service waits, then fails.
struct StoreWriteLock {
    runtime: tokio::runtime::Runtime,
    connection: SqliteConnection,
}

impl StoreWriteLock {
    fn take(db: &Path) -> StoreWriteLock {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the lock holder");
        let connection = runtime.block_on(async {
            let options = SqliteConnectOptions::new()
                .filename(db)
                .busy_timeout(Duration::from_secs(10));
            let mut connection = SqliteConnection::connect_with(&options)
                .await
                .expect("open the store");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut connection)
                .await
                .expect("take the store's write lock");
            connection
        });
        StoreWriteLock {
            runtime,
            connection,
        }
    }

    fn release(self) {
        let StoreWriteLock {
            runtime,
            mut connection,
        } = self;
        runtime.block_on(async {
            sqlx::query("ROLLBACK")
                .execute(&mut connection)
                .await
                .expect("release the write lock");
            connection.close().await.expect("close the store");
        });
    }
}

/// A service with one mirror, `m`, whose pushes wait a second, returned once its first run is
/// waiting to push (so the store can be locked while the run is in progress); the temporary
/// directory holds the slow git and must outlive the service.
fn slow_service(prefix: &str, serve_section: &str) -> (Serve, Repo, Repo, tempfile::TempDir) {
    let (src, dst) = pair(prefix);
    let tools = tempfile::tempdir().expect("tools dir");
    let slow = slow_git(tools.path(), 1);
    let toml = mirror_toml(
        "m",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start_with_env(
        serve_section,
        &toml,
        &[("FERRY_GIT", slow.to_str().expect("utf-8 path"))],
    );
    let pushing = tools.path().join("pushing");
    serve.wait(
        "the first sync to reach its push",
        Duration::from_secs(20),
        || pushing.exists(),
    );
    (serve, src, dst, tools)
}

fn webhook(serve: &Serve) {
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    let (code, answer) = serve.post("/hooks/m", &headers, &body);
    assert_eq!(code, 202, "{answer}");
}

#[test]
fn a_run_whose_result_cannot_be_recorded_at_first_is_recorded_by_a_retry() {
    let (serve, src, dst, _tools) = slow_service("trust-finish", "");
    let lock = StoreWriteLock::take(&serve.db_path());
    serve.wait("recording the run to fail", Duration::from_secs(30), || {
        serve.logs().contains("cannot record the run")
    });
    lock.release();
    serve.wait_converged("m", &src.path(), &dst.path());
    assert_eq!(serve.runs("m").len(), 1, "the run is recorded once");

    push_commit(&src, "after the store came back");
    webhook(&serve);
    serve.wait("the next event's run", Duration::from_secs(30), || {
        serve.runs("m").len() == 2
    });
    serve.wait_converged("m", &src.path(), &dst.path());
}

#[test]
fn a_run_whose_result_cannot_be_recorded_goes_back_to_the_queue_with_its_error() {
    // Retries far enough apart that the queued retry can be seen before it runs.
    let (serve, src, dst, _tools) =
        slow_service("trust-requeue", "retry_base = \"1m\"\nretry_max = \"2m\"");
    let lock = StoreWriteLock::take(&serve.db_path());
    serve.wait(
        "the service to give up recording the run",
        Duration::from_secs(90),
        || {
            serve
                .get("/metrics")
                .1
                .contains("ferry_runs_unrecorded_total{mirror=\"m\"} 1")
        },
    );
    lock.release();
    serve.wait(
        "the mirror to leave syncing",
        Duration::from_secs(30),
        || serve.mirror("m")["state"] != "syncing",
    );
    let m = serve.mirror("m");
    assert_eq!(m["state"], "queued", "{m}");
    assert!(m["retry_at"].is_i64(), "a retry time: {m}");
    assert!(
        m["interrupted"]
            .as_str()
            .is_some_and(|e| e.contains("cannot record the run")),
        "the error is recorded: {m}"
    );
    assert!(
        serve.runs("m").is_empty(),
        "the lost result is not invented"
    );

    // A new event does not wait for the retry time, and is synced.
    push_commit(&src, "after the store came back");
    webhook(&serve);
    serve.wait_converged("m", &src.path(), &dst.path());
    let m = serve.mirror("m");
    assert_eq!(m["interrupted"], serde_json::Value::Null, "{m}");
    assert_eq!(m["behind_since"], serde_json::Value::Null, "{m}");
    assert_eq!(serve.runs("m").len(), 1);
}

/// Runs the ferry command line with a clean slate of ferry's variables; (exit code, stdout,
/// stderr).
fn ferry(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_LISTEN")
        .env_remove("FERRY_DATA_DIR")
        .output()
        .expect("run ferry");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_and_runs_leave_a_live_store_alone_when_the_service_listens_elsewhere() {
    let (src, dst) = pair("trust-elsewhere");
    let tools = tempfile::tempdir().expect("tools dir");
    let slow = slow_git(tools.path(), 5);
    // The config names a port nobody listens on; the service is told to listen elsewhere.
    let configured = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let toml = mirror_toml(
        "m",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    let serve = Serve::start_with_env(
        &format!("listen = \"127.0.0.1:{configured}\""),
        &toml,
        &[
            ("FERRY_GIT", slow.to_str().expect("utf-8 path")),
            ("FERRY_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert!(!serve.base.ends_with(&format!(":{configured}")));
    let pushing = tools.path().join("pushing");
    serve.wait(
        "the first sync to reach its push",
        Duration::from_secs(20),
        || pushing.exists(),
    );

    let config = serve.config_path().display().to_string();
    let data_dir = serve.dir.path().join("data").display().to_string();
    let warning = format!(
        "a ferry serve holds {data_dir} but does not answer at http://127.0.0.1:{configured}; it may listen elsewhere (--listen)"
    );
    let (code, out, err) = ferry(&["status", "--config", &config]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains(&warning), "{err}");
    let line = out.lines().find(|l| l.starts_with("m ")).unwrap_or("");
    assert!(line.contains("syncing"), "the state as it is: {out}");
    let (code, out, err) = ferry(&["runs", "m", "--config", &config]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains(&warning), "{err}");
    assert!(out.contains("no runs"), "the sync is still running: {out}");

    // Nothing requeued the running sync behind the service's back: it runs once.
    serve.wait_converged("m", &src.path(), &dst.path());
    assert_eq!(serve.runs("m").len(), 1, "{:?}", serve.runs("m"));
    assert_eq!(serve.mirror("m")["behind_since"], serde_json::Value::Null);
}

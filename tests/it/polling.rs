//! Polling when caches are shared: a poll asks whether the source moved since the mirror last
//! synced, not whether it moved since the shared cache last fetched.

use crate::harness::{Repo, Transport};
use crate::service::{mirror_toml, push_commit, Serve};
use std::process::Command;

/// Two mirrors of one source share the service's cache. A `ferry sync` of the first (same
/// cache dir) fetches a new commit into the cache; the second mirror's poll must still see
/// that its own destination has not received it.
#[test]
fn a_poll_sees_a_change_that_another_sync_already_fetched_into_the_shared_cache() {
    let src = Repo::source("shared-poll-src");
    let (first, second) = (Repo::empty("shared-poll-a"), Repo::empty("shared-poll-b"));
    let s = src.url(Transport::File);
    let toml = mirror_toml("a", &s, &first.url(Transport::File), "")
        + &mirror_toml(
            "b",
            &s,
            &second.url(Transport::File),
            "poll_interval = \"500ms\"",
        );
    let serve = Serve::start("", &toml);
    serve.wait_converged("a", &src.path(), &first.path());
    serve.wait_converged("b", &src.path(), &second.path());

    push_commit(&src, "fetched by someone else");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["sync", "-q", "--config"])
        .arg(serve.config_path())
        .arg("--cache-dir")
        .arg(serve.dir.path().join("data").join("cache"))
        .arg("a")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run ferry sync");
    assert!(
        out.status.success(),
        "ferry sync a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        first.refs()["refs/heads/main"],
        src.refs()["refs/heads/main"]
    );

    serve.wait_converged("b", &src.path(), &second.path());
    assert!(
        serve.runs("b").iter().any(|r| r["trigger"] == "poll"),
        "the poll, not something else, caught it up"
    );
}

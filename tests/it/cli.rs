//! The command line as a user meets it: config files, the classic function's environment,
//! usage errors, exit codes, and secrets that never show up anywhere.

use crate::harness::{branches_and_tags, servers, Ferry, Repo, Run, Transport};
use ferry_testkit::{ProxyMode, TcpProxy, WRITER};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[test]
fn a_config_file_runs_every_mirror_or_the_named_ones() {
    let (a_src, a_dst) = (Repo::source("cfg-a-src"), Repo::empty("cfg-a-dst"));
    let (b_src, b_dst) = (Repo::source("cfg-b-src"), Repo::empty("cfg-b-dst"));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{}\n", WRITER.1)).unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[defaults]
exclude = ["refs/pull/*"]

[[mirror]]
name = "alpha"
source = "{}"
destinations = [{{ url = "{}", username = "{}", password_file = "token" }}]

[[mirror]]
name = "beta"
source = {{ url = "{}" }}
destinations = ["{}"]
"#,
            a_src.url(Transport::File),
            a_dst.url(Transport::Http),
            WRITER.0,
            b_src.url(Transport::File),
            b_dst.url(Transport::File),
        ),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let ferry = Ferry::new();
    let run = ferry.sync(&["--config", &cfg, "beta"]);
    run.assert_code(0);
    assert_eq!(run.json["mirrors"].as_array().map(Vec::len), Some(1));
    assert!(a_dst.refs().is_empty(), "only the named mirror ran");
    let run = ferry.sync(&["--config", &cfg]);
    run.assert_code(0);
    assert_eq!(run.json["mirrors"][0]["name"], "alpha");
    assert_eq!(run.json["mirrors"][1]["name"], "beta");
    assert_eq!(
        branches_and_tags(&a_dst.path()),
        branches_and_tags(&a_src.path())
    );
    assert_eq!(
        branches_and_tags(&b_dst.path()),
        branches_and_tags(&b_src.path())
    );

    let run = ferry.sync(&["--config", &cfg, "gamma"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("no mirror named 'gamma'") && run.stderr.contains("alpha"),
        "{}",
        run.stderr
    );
}

#[test]
fn config_errors_exit_2_and_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, "[[mirror]]\nname = \"x\"\nsource = \"/a\"\ndestinations = [\"/b\"]\ndivergance = \"keep\"\n").unwrap();
    let run = Ferry::new().run("sync", &["--config", &config.display().to_string()]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("ferry.toml")
            && run.stderr.contains("line 5")
            && run.stderr.contains("divergance"),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    let ferry = Ferry::new();
    for args in [
        &["--divergence", "sometimes", "/a", "/b"][..],
        &["/only-a-source"][..],
        &[][..],
        &["--timeout", "soon", "/a", "/b"][..],
        &["--include", "heads/*", "/a", "/b"][..],
    ] {
        let run = ferry.run("sync", args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty());
    }
    assert_eq!(ferry.run("frobnicate", &[]).code, 2);
}

#[test]
fn the_classic_functions_environment_works_unchanged() {
    let (src, dst) = (Repo::source("classic-src"), Repo::empty("classic-dst"));
    let run = Ferry::new()
        .env("SRC_REPO", &src.url(Transport::Http))
        .env("SRC_USER", WRITER.0)
        .env("SRC_PASS", WRITER.1)
        .env("DEST_REPO", &dst.url(Transport::Http))
        .env("DEST_USER", WRITER.0)
        .env("DEST_PASS", WRITER.1)
        .sync(&[]);
    run.assert_code(0);
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn credentials_in_a_url_are_lifted_out_and_redacted() {
    let (src, dst) = (Repo::source("urlcred-src"), Repo::empty("urlcred-dst"));
    let url = dst.url(Transport::Http).replacen(
        "http://",
        &format!("http://{}:{}@", WRITER.0, WRITER.1),
        1,
    );
    let run = Ferry::new().sync(&[&src.url(Transport::File), &url]);
    run.assert_code(0);
    assert!(!run.stdout.contains(WRITER.1) && !run.stderr.contains(WRITER.1));
    assert!(run.dest(0)["url"]
        .as_str()
        .unwrap_or("")
        .starts_with(&format!("http://{}@", WRITER.0)));
}

#[test]
fn the_json_report_has_the_documented_shape() {
    let (src, dst) = (Repo::source("shape-src"), Repo::empty("shape-dst"));
    let run = Ferry::new().sync(&[&src.url(Transport::File), &dst.url(Transport::File)]);
    run.assert_code(0);
    let j = &run.json;
    assert_eq!(j["ok"], true);
    let d = run.dest(0);
    assert!(d["url"].is_string() && d["ok"] == true && d["refs"].is_array());
    let r = run.ref_entry(0, "refs/heads/main");
    for key in ["ref", "action", "outcome", "old", "new"] {
        assert!(r.get(key).is_some(), "ref entry lacks {key}: {r}");
    }
    assert_eq!(r["old"], serde_json::Value::Null);
    assert_eq!(r["new"].as_str().map(str::len), Some(40));
}

/// The token must not appear in output, logs, files under the cache, or any process's
/// command line while a (deliberately slow) transfer is running.
#[test]
fn secrets_never_leak() {
    let token = format!("tok-{}-s3cr3t", std::process::id());
    let (src, dst) = (Repo::source("secret-src"), Repo::empty("secret-dst"));

    // A stalled HTTP source: ferry and its git children sit there while we look at /proc.
    let target: SocketAddr = ([127, 0, 0, 1], servers().http_port()).into();
    let proxy = TcpProxy::start(target, ProxyMode::Stall).unwrap();
    let slow_url = src.url(Transport::Http).replace(
        &format!(":{}/", servers().http_port()),
        &format!(":{}/", proxy.port()),
    );
    let ferry = Ferry::new()
        .env("FERRY_SOURCE_USERNAME", "bot")
        .env("FERRY_SOURCE_PASSWORD", &token);
    let child = ferry
        .command(
            "sync",
            &[
                "-vv",
                "--timeout",
                "4s",
                &slow_url,
                &dst.url(Transport::File),
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut saw_git = false;
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(
                !cmdline.contains(&token),
                "the token is in a process's argv: {cmdline}"
            );
            saw_git |= cmdline.contains("git") && cmdline.contains(&proxy.port().to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        saw_git,
        "git was running against the slow server while we looked"
    );
    let slow = Run::from_output(child.wait_with_output().unwrap());
    assert_eq!(slow.code, 1);

    // A run that works and one that fails auth, both at maximum verbosity.
    let ok = Ferry::new()
        .env("FERRY_SOURCE_USERNAME", WRITER.0)
        .env("FERRY_SOURCE_PASSWORD", WRITER.1)
        .env("FERRY_DEST_USERNAME", "bot")
        .env("FERRY_DEST_PASSWORD", &token);
    let fail = ok.run(
        "sync",
        &["-vv", &src.url(Transport::Http), &dst.url(Transport::Http)],
    );
    assert_eq!(fail.code, 1);
    for run in [&slow, &fail] {
        assert!(
            !run.stdout.contains(&token) && !run.stderr.contains(&token),
            "token in output:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    for cache in [ferry.cache.path(), ok.cache.path()] {
        for file in walk(cache) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&token),
                "token in {}",
                file.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_reader_that_stops_reading_the_report_is_no_crash() {
    let (src, dst) = (Repo::source("pipe-src"), Repo::empty("pipe-dst"));
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr");
    // `| true`: the reader is gone before ferry prints its report (as with `| head -0`).
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            r#""$0" sync --cache-dir "$1" "$2" "$3" 2>"$4" | true; echo "${PIPESTATUS[0]}""#,
            env!("CARGO_BIN_EXE_ferry"),
        ])
        .arg(dir.path().join("cache"))
        .arg(src.url(Transport::File))
        .arg(dst.url(Transport::File))
        .arg(&stderr)
        .output()
        .expect("run bash");
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, "0", "the sync succeeded: {stderr}");
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn a_ref_named_with_ref_is_synced_alone_and_other_refs_are_left_alone() {
    let (src, dst) = (Repo::source("named-src"), Repo::empty("named-dst"));
    src.git(&["branch", "dev"]);
    src.push(&["main", "dev"]);
    let ferry = Ferry::new();
    let (s, d) = (src.url(Transport::File), dst.url(Transport::File));
    ferry.sync(&[&s, &d]).assert_code(0);
    let old_dev = dst.refs()["refs/heads/dev"].clone();

    let main = src.commit("main moves");
    src.git(&["checkout", "-q", "dev"]);
    src.commit("dev moves");
    src.git(&["checkout", "-q", "main"]);
    src.push(&["main", "dev"]);
    let named = format!("refs/heads/main={main}");
    let run = ferry.sync(&["--ref", &named, &s, &d]);
    run.assert_code(0);
    let refs: Vec<&str> = run.dest(0)["refs"]
        .as_array()
        .expect("refs")
        .iter()
        .filter_map(|r| r["ref"].as_str())
        .collect();
    assert_eq!(refs, ["refs/heads/main"], "{}", run.stdout);
    assert_eq!(dst.refs()["refs/heads/main"], main);
    assert_eq!(dst.refs()["refs/heads/dev"], old_dev, "dev was not named");

    // Without --ref, the whole selection: dev follows.
    ferry.sync(&[&s, &d]).assert_code(0);
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn a_post_receive_hook_passing_each_pushed_ref_keeps_the_mirror_in_step() {
    let (src, dst) = (Repo::source("hook-src"), Repo::empty("hook-dst"));
    src.git(&["branch", "dev"]);
    src.push(&["main", "dev"]);
    let ferry = Ferry::new();
    let (s, d) = (src.url(Transport::File), dst.url(Transport::File));
    ferry.sync(&[&s, &d]).assert_code(0);
    // What a server-side hook does: one --ref per line git hands it (old new ref).
    let log = ferry.cache.path().join("hook.log");
    let hook = src.path().join("hooks/post-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -- \nwhile read old new ref; do set -- \"$@\" --ref \"$ref=$new\"; done\nexec '{}' sync --cache-dir '{}' \"$@\" '{s}' '{d}' >>'{}' 2>&1\n",
            env!("CARGO_BIN_EXE_ferry"),
            ferry.cache.path().display(),
            log.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    src.commit("pushed");
    src.git(&["tag", "v2"]);
    src.push(&["main", "v2"]);
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path()),
        "hook output:\n{report}"
    );
    // A deletion reaches the hook with the zero id.
    src.push(&[":dev"]);
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !dst.refs().contains_key("refs/heads/dev"),
        "hook output:\n{report}"
    );
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );
}

#[test]
fn a_bad_ref_argument_exits_2_and_says_what_to_give() {
    let ferry = Ferry::new();
    for (arg, says) in [
        ("main", "full ref name"),
        ("refs/heads/main=abc", "not an object id"),
        ("refs/heads/a b", "full ref name"),
    ] {
        let run = ferry.run("sync", &["--ref", arg, "/a", "/b"]);
        assert_eq!(run.code, 2, "{arg}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{arg}: {}", run.stderr);
    }
    let run = ferry.run("plan", &["--ref", "refs/heads/main", "/a", "/b"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("whole selection"), "{}", run.stderr);
}

//! Smoke tests proving that every server really works end to end, including
//! the failure modes ferry's tests rely on (403, 401, 413, host key errors,
//! cut and stalled connections).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ferry_testkit::{
    generate_repo, git, git_binary, git_command, git_with_env, run_git, ProxyMode, Servers,
    TcpProxy, WorkRepo, READER, WRITER,
};

type Env = Vec<(String, String)>;

/// Runs every named check, then fails listing all that failed (with their
/// full error chains), so one broken transport does not hide the others.
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn run(&mut self, name: &str, check: impl FnOnce() -> Result<()>) {
        let started = Instant::now();
        match check() {
            Ok(()) => eprintln!("ok   {name} ({:?})", started.elapsed()),
            Err(e) => {
                eprintln!("FAIL {name}: {e:#}");
                self.failures.push(format!("{name}: {e:#}"));
            }
        }
    }
}

fn ssh_env(servers: &Servers, known_hosts: &Path) -> Env {
    vec![(
        "GIT_SSH_COMMAND".to_string(),
        servers.ssh_command(known_hosts),
    )]
}

/// Pushes a new commit to `name` via `url`, clones it back via the same URL
/// and checks the clone has the pushed commit.
fn push_and_clone(
    servers: &Servers,
    name: &str,
    url: &str,
    config: &[&str],
    env: &Env,
) -> Result<()> {
    servers.create_bare(name)?;
    let work = WorkRepo::new()?;
    let oid = work.commit("README", &format!("hello {name}\n"), "first")?;
    let mut push = vec![];
    push.extend_from_slice(config);
    push.extend_from_slice(&["push", "-q", url, "main"]);
    work.git_with_env(&push, env)?;
    ensure!(
        git(&servers.repo_path(name), &["rev-parse", "main"])? == oid,
        "server repo does not have the pushed commit"
    );
    let clone_dir = tempfile::tempdir()?;
    let mut clone = vec![];
    clone.extend_from_slice(config);
    clone.extend_from_slice(&["clone", "-q", url, "clone"]);
    git_with_env(clone_dir.path(), &clone, env)?;
    let cloned = git(&clone_dir.path().join("clone"), &["rev-parse", "HEAD"])?;
    ensure!(cloned == oid, "clone has {cloned}, pushed {oid}");
    Ok(())
}

/// Pushes a ~6 MB incompressible history (larger than git's 1 MiB
/// http.postBuffer, so the request body is chunked) to `url`.
fn push_large(servers: &Servers, name: &str, url: &str, config: &[&str], env: &Env) -> Result<()> {
    servers.create_bare(name)?;
    let src = tempfile::tempdir()?;
    let src_repo = src.path().join("src.git");
    generate_repo(&src_repo, 6, 1024 * 1024, 0, 7)?;
    let mut push = vec![];
    push.extend_from_slice(config);
    push.extend_from_slice(&["push", "-q", url, "main"]);
    git_with_env(&src_repo, &push, env)?;
    ensure!(
        git(&servers.repo_path(name), &["rev-parse", "main"])?
            == git(&src_repo, &["rev-parse", "main"])?,
        "server repo does not have the pushed history"
    );
    Ok(())
}

/// Expects `result` to be an error whose text contains one of `needles`.
fn expect_error(result: Result<String>, needles: &[&str]) -> Result<()> {
    match result {
        Ok(out) => bail!("expected a failure mentioning {needles:?}, but it succeeded: {out}"),
        Err(e) => {
            let text = format!("{e:#}");
            ensure!(
                needles.iter().any(|n| text.contains(n)),
                "expected the error to mention one of {needles:?}, got:\n{text}"
            );
            Ok(())
        }
    }
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

#[test]
fn servers_all_transports_and_failure_modes() -> Result<()> {
    let started = Instant::now();
    let servers = Servers::start()?;
    eprintln!(
        "Servers::start() took {:?} (http {}, https {}, ssh {}, git daemon {})",
        started.elapsed(),
        servers.http_port(),
        servers.https_port(),
        servers.ssh_port(),
        servers.git_daemon_port()
    );
    let ca = format!("http.sslCAInfo={}", servers.ca_file().display());
    let https_config = ["-c", ca.as_str()];
    let writer = servers.http_auth_env(WRITER);
    let reader = servers.http_auth_env(READER);
    let mut checks = Checks { failures: vec![] };

    checks.run("file push+clone", || {
        push_and_clone(&servers, "file", &servers.file_url("file"), &[], &vec![])
    });
    checks.run("http push+clone (writer)", || {
        push_and_clone(&servers, "http", &servers.http_url("http"), &[], &writer)
    });
    checks.run("https push+clone (writer, sslCAInfo)", || {
        push_and_clone(
            &servers,
            "https",
            &servers.https_url("https"),
            &https_config,
            &writer,
        )
    });
    checks.run("ssh push+clone", || {
        push_and_clone(
            &servers,
            "ssh",
            &servers.ssh_url("ssh"),
            &[],
            &ssh_env(&servers, servers.known_hosts()),
        )
    });
    checks.run("git daemon push+clone", || {
        push_and_clone(
            &servers,
            "daemon",
            &servers.git_daemon_url("daemon"),
            &[],
            &vec![],
        )
    });
    checks.run("large push over http", || {
        push_large(
            &servers,
            "large-http",
            &servers.http_url("large-http"),
            &[],
            &writer,
        )
    });
    checks.run("large push over https", || {
        push_large(
            &servers,
            "large-https",
            &servers.https_url("large-https"),
            &https_config,
            &writer,
        )
    });
    checks.run("https without the CA fails", || {
        servers.create_bare("https-noca")?;
        expect_error(
            git_with_env(
                servers.root(),
                &["ls-remote", &servers.https_url("https-noca")],
                &writer,
            ),
            &["certificate", "SSL"],
        )
    });

    checks.run("reader can clone over http", || {
        let dir = tempfile::tempdir()?;
        git_with_env(
            dir.path(),
            &["clone", "-q", &servers.http_url("http"), "c"],
            &reader,
        )?;
        Ok(())
    });
    checks.run("reader push gets 403", || {
        let work = WorkRepo::new()?;
        work.commit("f", "reader", "reader commit")?;
        expect_error(
            work.git_with_env(&["push", &servers.http_url("http"), "main:reader"], &reader),
            &["403"],
        )?;
        expect_error(
            work.git_with_env(
                &https_config
                    .iter()
                    .copied()
                    .chain(["push", &servers.https_url("https"), "main:reader"])
                    .collect::<Vec<_>>(),
                &reader,
            ),
            &["403"],
        )
    });
    checks.run("wrong password gets 401", || {
        let bad = servers.http_auth_env((WRITER.0, "not-the-password"));
        expect_error(
            git_with_env(
                servers.root(),
                &["ls-remote", &servers.http_url("http")],
                &bad,
            ),
            &["401", "Authentication failed"],
        )
    });
    checks.run("no credentials gets 401", || {
        expect_error(
            git(servers.root(), &["ls-remote", &servers.http_url("http")]),
            &["401", "Authentication failed", "could not read Username"],
        )
    });
    checks.run("push > 16 KiB to limited url gets 413", || {
        servers.create_bare("limited")?;
        let src = tempfile::tempdir()?;
        let src_repo = src.path().join("src.git");
        generate_repo(&src_repo, 1, 64 * 1024, 0, 11)?;
        expect_error(
            git_with_env(
                &src_repo,
                &["push", &servers.limited_http_url("limited"), "main"],
                &writer,
            ),
            &["HTTP 413", "Request Entity Too Large", "413"],
        )
    });
    checks.run("small push to limited url works", || {
        push_and_clone(
            &servers,
            "limited-small",
            &servers.limited_http_url("limited-small"),
            &[],
            &writer,
        )
    });
    checks.run("ssh with changed host key fails", || {
        expect_error(
            git_with_env(
                servers.root(),
                &["ls-remote", &servers.ssh_url("ssh")],
                &ssh_env(&servers, servers.wrong_known_hosts()),
            ),
            &["REMOTE HOST IDENTIFICATION HAS CHANGED"],
        )
    });
    checks.run("ssh with unknown host key fails", || {
        expect_error(
            git_with_env(
                servers.root(),
                &["ls-remote", &servers.ssh_url("ssh")],
                &ssh_env(&servers, servers.empty_known_hosts()),
            ),
            &["Host key verification failed", "host key is known"],
        )
    });

    checks.run("proxy Forward to git daemon", || {
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, servers.git_daemon_port()));
        let proxy = TcpProxy::start(target, ProxyMode::Forward)?;
        let url = format!("git://127.0.0.1:{}/daemon.git", proxy.port());
        let out = git(servers.root(), &["ls-remote", &url, "refs/heads/main"])?;
        ensure!(
            out.ends_with("refs/heads/main"),
            "unexpected ls-remote: {out}"
        );
        ensure!(
            proxy.connections() == 1,
            "connections = {}",
            proxy.connections()
        );
        Ok(())
    });
    checks.run("proxy CutAfter cuts a clone", || {
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, servers.git_daemon_port()));
        let proxy = TcpProxy::start(target, ProxyMode::CutAfter { bytes: 2000 })?;
        let url = format!("git://127.0.0.1:{}/large-http.git", proxy.port());
        let dir = tempfile::tempdir()?;
        expect_error(
            git(dir.path(), &["clone", "-q", &url, "c"]),
            &["fatal", "error"],
        )?;
        // Switching back to Forward heals new connections.
        proxy.set_mode(ProxyMode::Forward);
        git(dir.path(), &["ls-remote", &url])?;
        ensure!(
            proxy.connections() == 2,
            "connections = {}",
            proxy.connections()
        );
        Ok(())
    });
    checks.run("proxy Stall hangs git until its own timeout", || {
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, servers.git_daemon_port()));
        let proxy = TcpProxy::start(target, ProxyMode::Stall)?;
        let url = format!("git://127.0.0.1:{}/daemon.git", proxy.port());
        let env_source = git_command(servers.root())?;
        let mut cmd = Command::new("timeout");
        cmd.arg("3").arg(git_binary()?).args(["ls-remote", &url]);
        for (k, v) in env_source.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let t = Instant::now();
        let status = cmd.status().context("failed to run timeout")?;
        ensure!(
            status.code() == Some(124),
            "expected timeout (124), got {status}"
        );
        ensure!(t.elapsed() >= Duration::from_secs(3), "returned too early");
        ensure!(
            proxy.connections() == 1,
            "connections = {}",
            proxy.connections()
        );
        Ok(())
    });

    if !checks.failures.is_empty() {
        bail!(
            "{} check(s) failed:\n{}\n\nserver logs:{}",
            checks.failures.len(),
            checks.failures.join("\n\n"),
            servers.logs()
        );
    }

    // Drop stops every server and removes the temp dir.
    let ports = [
        servers.http_port(),
        servers.https_port(),
        servers.ssh_port(),
        servers.git_daemon_port(),
    ];
    let root = servers.root().to_path_buf();
    let t = Instant::now();
    drop(servers);
    eprintln!("Servers drop took {:?}", t.elapsed());
    for port in ports {
        ensure!(!accepts(port), "port {port} still accepts after drop");
    }
    ensure!(!root.exists(), "{} still exists after drop", root.display());
    Ok(())
}

#[test]
fn generate_repo_makes_expected_commits_and_refs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("gen.git");
    let t = Instant::now();
    generate_repo(&repo, 500, 2000, 21, 42)?;
    eprintln!(
        "generate_repo(500 commits, 2000 B, 21 refs) took {:?}",
        t.elapsed()
    );
    assert_eq!(git(&repo, &["rev-list", "--count", "main"])?, "500");
    let heads = git(
        &repo,
        &["for-each-ref", "--format=%(refname)", "refs/heads/"],
    )?;
    let tags = git(
        &repo,
        &["for-each-ref", "--format=%(refname)", "refs/tags/"],
    )?;
    assert_eq!(heads.lines().count(), 1 + 11, "heads:\n{heads}");
    assert_eq!(tags.lines().count(), 10, "tags:\n{tags}");
    assert!(heads.lines().any(|l| l == "refs/heads/b-0"));
    assert!(tags.lines().any(|l| l == "refs/tags/t-9"));
    // Annotated and lightweight tags both exist.
    assert_eq!(git(&repo, &["cat-file", "-t", "t-0"])?, "tag");
    assert_eq!(git(&repo, &["cat-file", "-t", "t-1"])?, "commit");
    git(&repo, &["fsck", "--no-progress"])?;

    // Deterministic: same seed, same history.
    let again = dir.path().join("again.git");
    generate_repo(&again, 500, 2000, 21, 42)?;
    assert_eq!(
        git(&repo, &["rev-parse", "main"])?,
        git(&again, &["rev-parse", "main"])?
    );
    // Refuses to overwrite a non-empty directory.
    assert!(generate_repo(&repo, 1, 1, 0, 1).is_err());
    Ok(())
}

#[test]
fn work_repo_commits_with_fixed_identity() -> Result<()> {
    let a = WorkRepo::new()?;
    let b = WorkRepo::new()?;
    let first = a.commit("dir/file.txt", "content\n", "msg")?;
    assert_eq!(first, b.commit("dir/file.txt", "content\n", "msg")?);
    assert_eq!(
        a.git(&["log", "-1", "--format=%an <%ae> %at"])?,
        "Ferry Testkit <testkit@ferry.invalid> 1700000000"
    );
    let second = a.commit(
        "dir/file.txt",
        "content\n",
        "unchanged content still commits",
    )?;
    assert_ne!(first, second);
    assert_eq!(a.git(&["rev-list", "--count", "HEAD"])?, "2");
    let err = a.git(&["rev-parse", "does-not-exist"]).unwrap_err();
    assert!(format!("{err:#}").contains("does-not-exist"), "{err:#}");
    let mut cmd = git_command(a.path())?;
    cmd.args(["symbolic-ref", "HEAD"]);
    assert_eq!(run_git(cmd)?, "refs/heads/main");
    Ok(())
}

#[test]
fn postgres_answers_keeps_data_across_a_restart_and_isolates_databases() {
    let mut pg = ferry_testkit::Postgres::start().expect("start PostgreSQL");
    let url = pg.create_database("smoke_a").expect("create a database");
    assert!(url.ends_with("/smoke_a"), "{url}");
    pg.create_database("smoke_b").expect("create another");
    pg.sql(
        "smoke_a",
        "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('kept')",
    )
    .expect("write");
    pg.stop().expect("fast shutdown");
    assert!(pg.sql("smoke_a", "SELECT 1").is_err(), "stopped");
    pg.start_again().expect("start again");
    assert_eq!(pg.sql("smoke_a", "SELECT v FROM t").expect("read"), "kept");
    assert!(
        pg.sql("smoke_b", "SELECT v FROM t").is_err(),
        "one database per test"
    );
    assert!(pg.create_database("no-such\"name").is_err());
}

//! The test harness: one set of real servers per test process, a temp-dir `ferry` runner that
//! parses `--json`, and source repositories to push commits into.

use ferry_testkit::{git, Servers, WorkRepo, WRITER};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tempfile::TempDir;

/// The real servers (nginx + git http-backend, sshd, git daemon), started once per test
/// process and shared; every test uses its own repositories.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| match Servers::start() {
        Ok(s) => s,
        Err(e) => panic!("cannot start the test servers: {e:#}"),
    })
}

/// A repository name no other test uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// How a test reaches a repository on the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    File,
    Http,
    Https,
    Ssh,
    GitDaemon,
}

pub const ALL_TRANSPORTS: [Transport; 5] = [
    Transport::File,
    Transport::Http,
    Transport::Https,
    Transport::Ssh,
    Transport::GitDaemon,
];

impl Transport {
    pub fn url(self, name: &str) -> String {
        let s = servers();
        match self {
            Transport::File => s.file_url(name),
            Transport::Http => s.http_url(name),
            Transport::Https => s.https_url(name),
            Transport::Ssh => s.ssh_url(name),
            Transport::GitDaemon => s.git_daemon_url(name),
        }
    }
}

/// Runs the real `ferry` binary with its own cache dir and a clean environment.
pub struct Ferry {
    pub cache: TempDir,
    env: Vec<(String, String)>,
}

impl Ferry {
    pub fn new() -> Ferry {
        Ferry {
            cache: tempfile::tempdir().expect("temp dir"),
            env: Vec::new(),
        }
    }

    /// Credentials and settings every transport needs: HTTP(S) as the writer, the SSH key,
    /// known_hosts and the test CA.
    pub fn with_test_credentials() -> Ferry {
        let s = servers();
        Ferry::new()
            .env("FERRY_SOURCE_USERNAME", WRITER.0)
            .env("FERRY_SOURCE_PASSWORD", WRITER.1)
            .env("FERRY_DEST_USERNAME", WRITER.0)
            .env("FERRY_DEST_PASSWORD", WRITER.1)
            .env("FERRY_SSH_KEY", &s.ssh_key().display().to_string())
            .env("FERRY_KNOWN_HOSTS", &s.known_hosts().display().to_string())
            .env("FERRY_CA_FILE", &s.ca_file().display().to_string())
    }

    pub fn env(mut self, key: &str, value: &str) -> Ferry {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn command(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg(subcommand)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null());
        cmd
    }

    /// `ferry sync --json ARGS`.
    pub fn sync(&self, args: &[&str]) -> Run {
        self.run("sync", &[&["--json"], args].concat())
    }

    /// `ferry plan --json ARGS`.
    pub fn plan(&self, args: &[&str]) -> Run {
        self.run("plan", &[&["--json"], args].concat())
    }

    pub fn run(&self, subcommand: &str, args: &[&str]) -> Run {
        let out = self.command(subcommand, args).output().expect("run ferry");
        Run::from_output(out)
    }
}

/// A finished ferry run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub json: Value,
}

impl Run {
    pub fn from_output(out: Output) -> Run {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            json,
        }
    }

    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn mirror(&self) -> &Value {
        &self.json["mirrors"][0]
    }

    pub fn dest(&self, i: usize) -> &Value {
        &self.mirror()["destinations"][i]
    }

    pub fn dest_error_kind(&self, i: usize) -> Option<String> {
        self.dest(i)["error"]["kind"].as_str().map(str::to_owned)
    }

    pub fn source_error_kind(&self) -> Option<String> {
        self.mirror()["source"]["error"]["kind"]
            .as_str()
            .map(str::to_owned)
    }

    pub fn ref_entry(&self, dest: usize, name: &str) -> &Value {
        self.dest(dest)["refs"]
            .as_array()
            .and_then(|refs| refs.iter().find(|r| r["ref"] == name))
            .unwrap_or_else(|| panic!("no entry for {name} in destination {dest}: {}", self.stdout))
    }

    /// (action, outcome) of one ref.
    pub fn ref_result(&self, dest: usize, name: &str) -> (String, String) {
        let r = self.ref_entry(dest, name);
        (
            r["action"].as_str().unwrap_or("").to_owned(),
            r["outcome"].as_str().unwrap_or("").to_owned(),
        )
    }

    pub fn ref_kind(&self, dest: usize, name: &str) -> Option<String> {
        self.ref_entry(dest, name)["kind"]
            .as_str()
            .map(str::to_owned)
    }

    /// Asserts that the run exited 0 and left every ref of destination `dest` unchanged.
    pub fn assert_all_unchanged(&self, dest: usize) {
        self.assert_code(0);
        assert!(
            self.outcomes(dest).values().all(|o| o == "unchanged"),
            "{}",
            self.stdout
        );
    }

    pub fn outcomes(&self, dest: usize) -> BTreeMap<String, String> {
        self.dest(dest)["refs"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .map(|r| {
                        (
                            r["ref"].as_str().unwrap_or("").to_owned(),
                            r["outcome"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A bare repository on the servers plus a work repo that pushes commits into it.
pub struct Repo {
    pub name: String,
    pub work: WorkRepo,
}

impl Repo {
    /// A new source with one commit on main.
    pub fn source(prefix: &str) -> Repo {
        let repo = Repo::empty(prefix);
        repo.commit("first");
        repo.push(&["main"]);
        repo
    }

    /// A new empty bare repository (and an empty work repo).
    pub fn empty(prefix: &str) -> Repo {
        let name = unique(prefix);
        servers().create_bare(&name).expect("create bare repo");
        Repo {
            name,
            work: WorkRepo::new().expect("work repo"),
        }
    }

    pub fn path(&self) -> PathBuf {
        servers().repo_path(&self.name)
    }

    pub fn url(&self, t: Transport) -> String {
        t.url(&self.name)
    }

    /// A new commit on the work repo's current branch; returns its id.
    pub fn commit(&self, msg: &str) -> String {
        self.work
            .commit(&format!("{msg}.txt"), msg, msg)
            .expect("commit")
    }

    pub fn git(&self, args: &[&str]) -> String {
        self.work
            .git(args)
            .unwrap_or_else(|e| panic!("git {args:?}: {e:#}"))
    }

    /// `git push --force <bare repo path> REFSPECS` from the work repo.
    pub fn push(&self, refspecs: &[&str]) {
        let path = self.path().display().to_string();
        let mut args = vec!["push", "-q", "--force", path.as_str()];
        args.extend_from_slice(refspecs);
        self.git(&args);
    }

    /// The bare repository's refs.
    pub fn refs(&self) -> BTreeMap<String, String> {
        refs_of(&self.path())
    }

    /// Sets a git config value in the bare repository (server-side rules).
    pub fn config(&self, key: &str, value: &str) {
        git(&self.path(), &["config", key, value]).expect("git config");
    }
}

pub fn refs_of(path: &Path) -> BTreeMap<String, String> {
    let out =
        git(path, &["for-each-ref", "--format=%(objectname) %(refname)"]).expect("for-each-ref");
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(o, n)| (n.to_owned(), o.to_owned()))
        .collect()
}

/// Refs under refs/heads and refs/tags: what ferry mirrors by default.
pub fn branches_and_tags(path: &Path) -> BTreeMap<String, String> {
    refs_of(path)
        .into_iter()
        .filter(|(n, _)| n.starts_with("refs/heads/") || n.starts_with("refs/tags/"))
        .collect()
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
pub fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

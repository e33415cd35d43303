//! Git LFS: mirrors carry their large files, incrementally. A real LFS server (giftless behind
//! the test nginx, with the git remotes' Basic auth) serves source and destination; fixture
//! repositories are made and checked out with the real git-lfs client.

use crate::harness::{servers, Ferry, Repo, Run, Transport};
use ferry_testkit::{LfsServer, ProxyMode, TcpProxy, LFS_USER, WRITER};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tempfile::TempDir;

/// The LFS server, started once per test process.
fn lfs() -> &'static LfsServer {
    static LFS: OnceLock<LfsServer> = OnceLock::new();
    LFS.get_or_init(|| match LfsServer::start(servers()) {
        Ok(s) => s,
        Err(e) => panic!("cannot start the LFS server: {e:#}"),
    })
}

/// Deterministic content of `len` bytes, different per `seed`.
fn content(seed: &str, len: usize) -> Vec<u8> {
    ferry_testkit::test_bytes(seed, len)
}

fn oid_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A source repository whose work repo tracks `*.bin` with git-lfs and pushes over HTTP, so
/// git-lfs uploads the objects to the source's LFS endpoint.
fn lfs_source(prefix: &str) -> Repo {
    lfs();
    let repo = Repo::empty(prefix);
    repo.git(&["lfs", "install", "--local"]);
    repo.git(&["lfs", "track", "*.bin"]);
    repo.git(&["add", ".gitattributes"]);
    repo.git(&["commit", "-q", "-m", "track *.bin with LFS"]);
    repo
}

/// Commits `bytes` as the LFS file `name`; returns the object's id.
fn add_large(repo: &Repo, name: &str, bytes: &[u8]) -> String {
    std::fs::write(repo.work.path().join(name), bytes).expect("write a large file");
    repo.git(&["add", name]);
    repo.git(&["commit", "-q", "-m", &format!("add {name}")]);
    oid_of(bytes)
}

/// `git push` over HTTP as the writer: git-lfs's pre-push hook uploads the LFS objects.
fn push_with_objects(repo: &Repo, refspec: &str) {
    let url = repo.url(Transport::Http);
    repo.work
        .git_with_env(
            &["push", "-q", "--force", &url, refspec],
            &servers().http_auth_env(WRITER),
        )
        .unwrap_or_else(|e| panic!("push with LFS objects: {e:#}\n{}", lfs().logs()));
}

/// A pointer file's text for `bytes` (what git stores for an LFS file).
fn pointer_text(bytes: &[u8]) -> String {
    format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
        oid_of(bytes),
        bytes.len()
    )
}

/// A config file mirroring `source` to `destination` (TOML remote tables) with `options`,
/// and the ferry (one cache, one set of records) that runs it.
struct Config {
    _dir: TempDir,
    path: PathBuf,
    ferry: Ferry,
}

impl Config {
    fn new(source: &Repo, destination: &str, options: &str) -> Config {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ferry.toml");
        let text = format!(
            "[[mirror]]\nname = \"lfs\"\nsource = {}\ndestinations = [{destination}]\n{options}\n",
            http_table(&source.url(Transport::Http), ""),
        );
        std::fs::write(&path, text).expect("write the config");
        let ferry = Ferry::new()
            .env("WRITER_PASSWORD", WRITER.1)
            .env("LFS_BOT_PASSWORD", LFS_USER.1);
        Config {
            _dir: dir,
            path,
            ferry,
        }
    }

    /// The same mirror with other options, run by the same ferry.
    fn with_options(self, source: &Repo, destination: &str, options: &str) -> Config {
        let next = Config::new(source, destination, options);
        Config {
            ferry: self.ferry,
            ..next
        }
    }

    fn sync(&self) -> Run {
        self.ferry
            .sync(&["--config", &self.path.display().to_string()])
    }
}

/// `{ url = URL, username = writer, password_env = WRITER_PASSWORD, EXTRA }`.
fn http_table(url: &str, extra: &str) -> String {
    format!(
        "{{ url = \"{url}\", username = \"{}\", password_env = \"WRITER_PASSWORD\"{extra} }}",
        WRITER.0
    )
}

/// The files of a fresh clone of `url` after `git lfs pull`: what a restore from it gets.
fn checkout(url: &str, files: &[&str]) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("clone");
    let env = servers().http_auth_env(WRITER);
    let git = |cwd: &Path, args: &[&str]| {
        ferry_testkit::git_with_env(cwd, args, &env)
            .unwrap_or_else(|e| panic!("git {args:?}: {e:#}"))
    };
    git(dir.path(), &["clone", "-q", url, "clone"]);
    git(&work, &["lfs", "install", "--local"]);
    git(&work, &["lfs", "pull"]);
    files
        .iter()
        .map(|f| std::fs::read(work.join(f)).expect("read a checked-out file"))
        .collect()
}

/// The LFS requests nginx logged for repository `name` since `since` requests were logged.
fn requests_for(name: &str, since: usize) -> Vec<ferry_testkit::LfsRequest> {
    let all = lfs().requests().expect("read the LFS log");
    all.into_iter()
        .skip(since)
        .filter(|r| r.uri.contains(&format!("/{name}.git/")))
        .collect()
}

fn logged() -> usize {
    lfs().requests().expect("read the LFS log").len()
}

fn uploads(requests: &[ferry_testkit::LfsRequest]) -> Vec<&ferry_testkit::LfsRequest> {
    requests.iter().filter(|r| r.method == "PUT").collect()
}

#[test]
fn a_first_sync_carries_the_lfs_objects_and_the_destination_checkout_has_the_real_content() {
    let source = lfs_source("lfs-first");
    let (a, b) = (content("first-a", 200_000), content("first-b", 70_000));
    let oids = [
        add_large(&source, "a.bin", &a),
        add_large(&source, "b.bin", &b),
    ];
    push_with_objects(&source, "main");
    let dest = Repo::empty("lfs-first-dst");
    assert!(lfs().stored("git", &dest.name).is_empty());

    let config = Config::new(&source, &http_table(&dest.url(Transport::Http), ""), "");
    let run = config.sync();
    run.assert_code(0);
    let report = &run.dest(0)["lfs"];
    assert_eq!(report["objects"], 2, "{}", run.stdout);
    assert_eq!(report["bytes"], (a.len() + b.len()) as u64);
    let mut want = oids.to_vec();
    want.sort();
    assert_eq!(lfs().stored("git", &dest.name), want);
    assert_eq!(
        checkout(&dest.url(Transport::Http), &["a.bin", "b.bin"]),
        vec![a, b]
    );
}

#[test]
fn an_incremental_sync_sends_only_the_object_the_new_commit_adds() {
    let source = lfs_source("lfs-incr");
    for i in 0..3 {
        add_large(
            &source,
            &format!("old{i}.bin"),
            &content(&format!("incr-{i}"), 30_000),
        );
    }
    push_with_objects(&source, "main");
    let dest = Repo::empty("lfs-incr-dst");
    let config = Config::new(&source, &http_table(&dest.url(Transport::Http), ""), "");
    config.sync().assert_code(0);

    let new = content("incr-new", 40_000);
    let new_oid = add_large(&source, "new.bin", &new);
    push_with_objects(&source, "main");
    let before = logged();
    let run = config.sync();
    run.assert_code(0);
    assert_eq!(run.dest(0)["lfs"]["objects"], 1, "{}", run.stdout);
    assert_eq!(run.dest(0)["lfs"]["bytes"], new.len() as u64);

    let to_dest = requests_for(&dest.name, before);
    let puts = uploads(&to_dest);
    assert_eq!(puts.len(), 1, "{to_dest:#?}");
    assert!(puts[0].uri.ends_with(&new_oid));
    // Every batch request to the destination asked about the new object only.
    let batches: Vec<_> = to_dest
        .iter()
        .filter(|r| r.uri.ends_with("/batch"))
        .collect();
    assert_eq!(batches.len(), 1, "{to_dest:#?}");
    assert_eq!(
        batches[0].body.matches("\"oid\"").count(),
        1,
        "{}",
        batches[0].body
    );
    assert!(batches[0].body.contains(&new_oid));
    // And the source was asked for that one object only.
    let from_source = requests_for(&source.name, before);
    assert_eq!(
        from_source.iter().filter(|r| r.method == "GET").count(),
        1,
        "{from_source:#?}"
    );
}

#[test]
fn a_ref_whose_lfs_object_the_source_lacks_is_held_back_unless_dangling_pointers_are_allowed() {
    let source = lfs_source("lfs-missing");
    let good = content("missing-good", 20_000);
    add_large(&source, "good.bin", &good);
    push_with_objects(&source, "main");
    // A pointer to an object nobody uploaded, on its own branch.
    let lost = content("missing-lost", 10_000);
    let lost_oid = oid_of(&lost);
    source.git(&["checkout", "-q", "-b", "broken"]);
    source
        .work
        .commit(
            "lost.ptr",
            &pointer_text(&lost),
            "a pointer without its object",
        )
        .expect("commit");
    // Pushed without git-lfs's pre-push hook, which would refuse to push without the object.
    let path = source.path().display().to_string();
    source.git(&["push", "-q", "--no-verify", &path, "broken"]);
    let dest = Repo::empty("lfs-missing-dst");

    let config = Config::new(&source, &http_table(&dest.url(Transport::Http), ""), "");
    let run = config.sync();
    run.assert_code(1);
    assert_eq!(run.ref_result(0, "refs/heads/main").1, "created");
    assert_eq!(run.ref_result(0, "refs/heads/broken").1, "failed");
    assert_eq!(
        run.ref_kind(0, "refs/heads/broken").as_deref(),
        Some("lfs_missing")
    );
    let reason = run.ref_entry(0, "refs/heads/broken")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains(&lost_oid), "{reason}");
    let missing = &run.dest(0)["lfs"]["missing"][0];
    assert_eq!(missing["oid"], lost_oid.as_str());
    assert_eq!(missing["kind"], "lfs_missing");
    assert_eq!(missing["refs"][0], "refs/heads/broken");
    let refs = dest.refs();
    assert!(
        refs.contains_key("refs/heads/main") && !refs.contains_key("refs/heads/broken"),
        "{refs:?}"
    );

    let allowing = config.with_options(
        &source,
        &http_table(&dest.url(Transport::Http), ""),
        "lfs_missing = \"push\"",
    );
    let run = allowing.sync();
    run.assert_code(0);
    assert_eq!(run.ref_result(0, "refs/heads/broken").1, "created");
    assert_eq!(run.dest(0)["lfs"]["missing"][0]["oid"], lost_oid.as_str());
    assert_eq!(
        dest.refs().get("refs/heads/broken"),
        source.refs().get("refs/heads/broken")
    );
}

/// A source `<name>` whose main adds one LFS file, `data.bin` (`len` bytes), pushed with its
/// object, and an empty destination `<name>-dst`; with the file's bytes and object id.
fn one_lfs_file(name: &str, len: usize) -> (Repo, Repo, Vec<u8>, String) {
    let source = lfs_source(name);
    let data = content(name, len);
    let oid = add_large(&source, "data.bin", &data);
    push_with_objects(&source, "main");
    (source, Repo::empty(&format!("{name}-dst")), data, oid)
}

#[test]
fn a_destination_lfs_endpoint_that_needs_other_credentials_gets_them_from_its_own_keys() {
    let (source, dest, _, oid) = one_lfs_file("lfs-creds", 25_000);
    let endpoint = servers().lfs_private_url(&dest.name);

    // The remote's own credentials are refused there: nothing is pushed, and it says why.
    let lfs_url = format!(", lfs_url = \"{endpoint}\"");
    let config = Config::new(
        &source,
        &http_table(&dest.url(Transport::Http), &lfs_url),
        "",
    );
    let run = config.sync();
    run.assert_code(1);
    assert_eq!(
        run.ref_kind(0, "refs/heads/main").as_deref(),
        Some("auth"),
        "{}",
        run.stdout
    );
    assert!(dest.refs().is_empty());

    let own = format!(
        "{lfs_url}, lfs_username = \"{}\", lfs_password_env = \"LFS_BOT_PASSWORD\"",
        LFS_USER.0
    );
    let config = config.with_options(&source, &http_table(&dest.url(Transport::Http), &own), "");
    let run = config.sync();
    run.assert_code(0);
    assert_eq!(run.dest(0)["lfs"]["objects"], 1);
    assert_eq!(lfs().stored("lfs-private", &dest.name), vec![oid]);
    assert!(lfs().stored("git", &dest.name).is_empty());
    assert!(!run.stdout.contains(LFS_USER.1) && !run.stderr.contains(LFS_USER.1));
}

#[test]
fn an_interrupted_upload_is_resumed_by_the_rerun_without_sending_finished_objects_again() {
    let source = lfs_source("lfs-resume");
    let small = content("resume-small", 50_000);
    let large = content("resume-large", 3_000_000);
    let small_oid = add_large(&source, "small.bin", &small);
    let large_oid = add_large(&source, "large.bin", &large);
    push_with_objects(&source, "main");
    let dest = Repo::empty("lfs-resume-dst");
    // Every connection to the destination is cut after 1 MB: the large upload never finishes.
    let proxy = TcpProxy::start(
        ([127, 0, 0, 1], servers().http_port()).into(),
        ProxyMode::CutAfter { bytes: 1_000_000 },
    )
    .expect("proxy");
    let url = format!("http://127.0.0.1:{}/git/{}.git", proxy.port(), dest.name);
    let config = Config::new(&source, &http_table(&url, ""), "");

    let run = config.sync();
    run.assert_code(1);
    assert_eq!(
        run.ref_kind(0, "refs/heads/main").as_deref(),
        Some("network"),
        "{}",
        run.stdout
    );
    let report = &run.dest(0)["lfs"];
    assert_eq!(report["objects"], 1, "{}", run.stdout);
    assert_eq!(report["failed"][0]["oid"], large_oid.as_str());
    assert!(
        dest.refs().is_empty(),
        "no ref may point to an object the destination lacks"
    );
    // (giftless keeps the cut upload's partial file; its batch API still asks for the object.)
    assert!(lfs().stored("git", &dest.name).contains(&small_oid));

    proxy.set_mode(ProxyMode::Forward);
    let before = logged();
    let run = config.sync();
    run.assert_code(0);
    assert_eq!(run.dest(0)["lfs"]["objects"], 1, "{}", run.stdout);
    let to_dest = requests_for(&dest.name, before);
    let puts = uploads(&to_dest);
    assert_eq!(puts.len(), 1, "{to_dest:#?}");
    assert!(puts[0].uri.ends_with(&large_oid));
    assert!(
        to_dest.iter().all(|r| !r.body.contains(&small_oid)),
        "the object that arrived is not asked about again: {to_dest:#?}"
    );
    assert_eq!(dest.refs(), source.refs());
    assert_eq!(
        checkout(&dest.url(Transport::Http), &["large.bin"]),
        vec![large]
    );
}

#[test]
fn lfs_false_mirrors_the_refs_only() {
    let source = lfs_source("lfs-off");
    add_large(&source, "data.bin", &content("off", 15_000));
    push_with_objects(&source, "main");
    let dest = Repo::empty("lfs-off-dst");
    let before = logged();
    let config = Config::new(
        &source,
        &http_table(&dest.url(Transport::Http), ""),
        "lfs = false",
    );
    let run = config.sync();
    run.assert_code(0);
    assert!(run.dest(0).get("lfs").is_none(), "{}", run.stdout);
    assert_eq!(dest.refs(), source.refs());
    assert!(lfs().stored("git", &dest.name).is_empty());
    assert!(requests_for(&source.name, before).is_empty());
}

#[test]
fn lfs_turned_on_after_a_refs_only_sync_carries_the_objects_though_no_ref_moved() {
    let (source, dest, bytes, oid) = one_lfs_file("lfs-later", 12_000);
    let table = http_table(&dest.url(Transport::Http), "");
    let off = Config::new(&source, &table, "lfs = false");
    off.sync().assert_code(0);
    assert_eq!(dest.refs(), source.refs());
    assert!(lfs().stored("git", &dest.name).is_empty());

    // Only the policy changes: the destination already holds every ref, and its record says
    // so (settled with LFS off), which says nothing about LFS objects.
    let on = off.with_options(&source, &table, "");
    let run = on.sync();
    run.assert_code(0);
    assert_eq!(run.dest(0)["lfs"]["objects"], 1, "{}", run.stdout);
    assert!(lfs().stored("git", &dest.name).contains(&oid));
    assert_eq!(
        checkout(&dest.url(Transport::Http), &["data.bin"]),
        vec![bytes]
    );
}

/// Past 64 tips a moved ref's history is scanned from its own last tip first (cheap), and the
/// scan from every tip runs only when that finds pointers: a merge of a branch whose objects
/// the destination has finds them from main's own tip, and the whole scan rules them out.
#[test]
fn with_many_tips_a_merged_branch_s_objects_are_not_counted_again_and_a_plain_commit_finds_none() {
    let source = lfs_source("lfs-tips");
    source.git(&["checkout", "-q", "-b", "feature"]);
    let feature = content("tips-feature", 20_000);
    add_large(&source, "feature.bin", &feature);
    source.git(&["checkout", "-q", "main"]);
    for i in 0..70 {
        source.commit(&format!("tagged-{i}"));
        source.git(&["tag", &format!("t{i}")]);
    }
    push_with_objects(&source, "feature");
    push_with_objects(&source, "main");
    source.push(&["refs/tags/*:refs/tags/*"]);
    let dest = Repo::empty("lfs-tips-dst");
    let config = Config::new(&source, &http_table(&dest.url(Transport::Http), ""), "");
    let first = config.sync();
    first.assert_code(0);
    assert_eq!(first.dest(0)["lfs"]["objects"], 1, "{}", first.stdout);

    source.git(&["merge", "-q", "--no-ff", "-m", "merge feature", "feature"]);
    let new = content("tips-new", 30_000);
    let new_oid = add_large(&source, "new.bin", &new);
    push_with_objects(&source, "main");
    let merged = config.sync();
    merged.assert_code(0);
    let lfs_report = &merged.dest(0)["lfs"];
    assert_eq!(lfs_report["objects"], 1, "{}", merged.stdout);
    // feature.bin is behind feature's tip, which the destination has: not found at all.
    assert_eq!(lfs_report["present"], 0, "{}", merged.stdout);
    assert_eq!(lfs().stored("git", &dest.name).len(), 2);
    assert!(lfs().stored("git", &dest.name).contains(&new_oid));

    let plain = source.commit("no large file");
    source.push(&["main"]);
    let run = config.sync();
    run.assert_code(0);
    assert!(run.dest(0)["lfs"].is_null(), "{}", run.stdout);
    assert_eq!(dest.refs().get("refs/heads/main"), Some(&plain));
}

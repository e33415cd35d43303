//! Fleets: discovery of every bare repository below a directory, membership, filters,
//! created destinations, deleted sources, and url destinations on the real HTTP server.

use crate::harness::{branches_and_tags, servers, unique, Ferry};
use ferry_testkit::{git, WorkRepo, WRITER};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A directory of bare source repositories, each with one commit on main, plus a config.
pub struct Fleet {
    dir: TempDir,
}

impl Fleet {
    pub fn new(repos: &[&str]) -> Fleet {
        let fleet = Fleet {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for r in repos {
            fleet.add(r);
        }
        fleet
    }

    pub fn source(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    pub fn backup(&self) -> PathBuf {
        self.dir.path().join("backup")
    }

    /// A new bare repository at `path` below the source, with a commit on main.
    pub fn add(&self, path: &str) -> String {
        let bare = self.source().join(path);
        std::fs::create_dir_all(&bare).expect("mkdir");
        git(&bare, &["init", "-q", "--bare", "-b", "main", "."]).expect("init");
        let work = WorkRepo::new().expect("work repo");
        let id = work.commit("a.txt", path, "first").expect("commit");
        work.git(&["push", "-q", &bare.display().to_string(), "main"])
            .expect("push");
        id
    }

    /// Writes `ferry.toml` with one fleet `acme` and the given extra lines in its table.
    pub fn config(&self, destination: &str, extra: &str) -> String {
        let path = self.dir.path().join("ferry.toml");
        let text = format!(
            "[[fleet]]\nname = \"acme\"\nsource = {{ provider = \"directory\", path = \"{}\" }}\n\
             destination = {destination}\n{extra}\n",
            self.source().display()
        );
        std::fs::write(&path, text).expect("write config");
        path.display().to_string()
    }

    pub fn directory_config(&self, extra: &str) -> String {
        self.config(
            &format!(
                "{{ provider = \"directory\", path = \"{}\", create = true }}",
                self.backup().display()
            ),
            extra,
        )
    }
}

/// `ferry fleet list --json` of the one fleet: member name -> the repository's JSON.
fn listing(ferry: &Ferry, config: &str) -> (i32, Vec<Value>) {
    let run = ferry.run("fleet", &["list", "--config", config, "--json"]);
    assert!(
        run.json.is_array(),
        "no JSON: {} {}",
        run.stdout,
        run.stderr
    );
    let repos = run.json[0]["repositories"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (run.code, repos)
}

fn action_of<'a>(repos: &'a [Value], name: &str) -> &'a Value {
    repos
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {repos:#?}"))
}

fn mirror_names(run: &crate::harness::Run) -> Vec<String> {
    run.json["mirrors"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| m["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn fleet_list_says_what_each_repository_would_get_and_changes_nothing() {
    let fleet = Fleet::new(&["app.git", "team/svc.git", "legacy-x.git"]);
    let config = fleet.directory_config("exclude = [\"legacy-*\"]");
    let ferry = Ferry::new();
    let (code, repos) = listing(&ferry, &config);
    assert_eq!(code, 0);
    assert_eq!(repos.len(), 3, "{repos:#?}");
    assert_eq!(action_of(&repos, "acme/app")["action"], "create");
    assert_eq!(action_of(&repos, "acme/team/svc")["action"], "create");
    let legacy = action_of(&repos, "acme/legacy-x");
    assert_eq!(legacy["action"], "skip");
    assert_eq!(legacy["reason"], "excluded");
    assert_eq!(legacy["detail"], "legacy-*");
    assert!(!fleet.backup().exists(), "list created destinations");
    assert!(
        !ferry.cache.path().join("fleets").exists(),
        "list wrote the fleet inventory"
    );
}

#[test]
fn sync_creates_every_member_and_a_name_picks_one_member_or_a_whole_fleet() {
    let fleet = Fleet::new(&["app.git", "team/svc.git", "legacy-x.git"]);
    let config = fleet.directory_config("exclude = [\"legacy-*\"]");
    let ferry = Ferry::new();

    let run = ferry.sync(&["--config", &config]);
    run.assert_code(0);
    assert_eq!(mirror_names(&run), ["acme/app", "acme/team/svc"]);
    for path in ["app.git", "team/svc.git"] {
        assert_eq!(
            branches_and_tags(&fleet.backup().join(path)),
            branches_and_tags(&fleet.source().join(path)),
            "{path}"
        );
    }
    assert!(!fleet.backup().join("legacy-x.git").exists());
    // A created destination's HEAD names the source's default branch, so clones check it out.
    let head = std::fs::read_to_string(fleet.backup().join("team/svc.git/HEAD")).expect("HEAD");
    assert_eq!(head.trim(), "ref: refs/heads/main");
    let (_, repos) = listing(&ferry, &config);
    assert_eq!(action_of(&repos, "acme/app")["action"], "mirror");

    let one = ferry.sync(&["--config", &config, "acme/team/svc"]);
    one.assert_code(0);
    assert_eq!(mirror_names(&one), ["acme/team/svc"]);
    let all = ferry.sync(&["--config", &config, "acme"]);
    all.assert_code(0);
    assert_eq!(mirror_names(&all), ["acme/app", "acme/team/svc"]);
    let unknown = ferry.sync(&["--config", &config, "acme/nope"]);
    unknown.assert_code(2);
    assert!(unknown.stderr.contains("acme/nope"), "{}", unknown.stderr);
}

#[test]
fn a_deleted_source_keeps_its_destination_unless_delete_is_asked_for() {
    let fleet = Fleet::new(&["app.git", "gone.git"]);
    let ferry = Ferry::new();
    let keep = fleet.directory_config("");
    ferry.sync(&["--config", &keep]).assert_code(0);
    std::fs::remove_dir_all(fleet.source().join("gone.git")).expect("delete source");

    let run = ferry.sync(&["--config", &keep]);
    run.assert_code(0);
    assert_eq!(mirror_names(&run), ["acme/app"]);
    assert!(fleet.backup().join("gone.git").join("HEAD").is_file());
    let (_, repos) = listing(&ferry, &keep);
    let gone = action_of(&repos, "acme/gone");
    assert_eq!(gone["action"], "source_deleted");
    assert_eq!(gone["then"], "keep");

    let delete = fleet.directory_config("on_source_deleted = \"delete\"");
    let (_, repos) = listing(&ferry, &delete);
    assert_eq!(action_of(&repos, "acme/gone")["then"], "delete");
    assert!(
        fleet.backup().join("gone.git").exists(),
        "list deleted a destination"
    );
    ferry.sync(&["--config", &delete]).assert_code(0);
    assert!(!fleet.backup().join("gone.git").exists());
    assert!(fleet.backup().join("app.git").join("HEAD").is_file());
    let (_, repos) = listing(&ferry, &delete);
    assert_eq!(
        repos.len(),
        1,
        "the deleted member is forgotten: {repos:#?}"
    );
}

#[test]
fn an_incomplete_listing_takes_nothing_for_deleted_and_says_why() {
    use std::os::unix::ffi::OsStrExt;
    let fleet = Fleet::new(&["app.git", "other.git"]);
    let ferry = Ferry::new();
    let config = fleet.directory_config("on_source_deleted = \"delete\"");
    ferry.sync(&["--config", &config]).assert_code(0);
    // A repository whose path is not UTF-8 cannot be listed: the listing is incomplete.
    let odd = fleet
        .source()
        .join(std::ffi::OsStr::from_bytes(b"bad-\xff"));
    std::fs::create_dir_all(odd.join("x.git/objects")).expect("mkdir");
    std::fs::create_dir_all(odd.join("x.git/refs")).expect("mkdir");
    std::fs::write(odd.join("x.git/HEAD"), "ref: refs/heads/main\n").expect("HEAD");
    std::fs::remove_dir_all(fleet.source().join("other.git")).expect("delete source");

    let run = ferry.sync(&["--config", &config]);
    run.assert_code(1);
    assert!(run.stderr.contains("incomplete"), "{}", run.stderr);
    assert!(
        fleet.backup().join("other.git").join("HEAD").is_file(),
        "a destination was deleted on an incomplete listing"
    );
    let (code, repos) = listing(&ferry, &config);
    assert_eq!(code, 1);
    assert_eq!(action_of(&repos, "acme/other")["action"], "unlisted");
}

#[test]
fn a_url_destination_puts_each_member_at_its_templated_url_with_the_configured_login() {
    let fleet = Fleet::new(&["app.git", "team/svc.git"]);
    let prefix = unique("fleet-url");
    for path in ["app", "team/svc"] {
        servers()
            .create_bare(&format!("{prefix}/{path}"))
            .expect("destination");
    }
    let template = servers().http_url(&format!("{prefix}/{{path}}"));
    let config = fleet.config(
        &format!(
            "{{ provider = \"url\", url = \"{template}\", username = \"{}\", password_env = \"DEST_PW\" }}",
            WRITER.0
        ),
        "",
    );
    let ferry = Ferry::new().env("DEST_PW", WRITER.1);
    let run = ferry.sync(&["--config", &config]);
    run.assert_code(0);
    for path in ["app", "team/svc"] {
        assert_eq!(
            branches_and_tags(&servers().repo_path(&format!("{prefix}/{path}"))),
            branches_and_tags(&fleet.source().join(format!("{path}.git"))),
            "{path}"
        );
    }
    assert!(!run.stdout.contains(WRITER.1) && !run.stderr.contains(WRITER.1));
}

#[test]
fn fleet_config_mistakes_name_the_line_and_the_fix() {
    let fleet = Fleet::new(&[]);
    std::fs::create_dir_all(fleet.source()).expect("mkdir");
    let ferry = Ferry::new();
    let cases = [
        (
            "{ provider = \"url\", url = \"https://h/x.git\" }",
            "",
            "must contain {path}",
        ),
        (
            "{ provider = \"directory\", path = \"/b\" }",
            "on_source_deleted = \"archive\"",
            "\"keep\" or \"delete\"",
        ),
        (
            "{ provider = \"svn\", path = \"/b\" }",
            "",
            "supported: directory, github, gitlab, gitea (or forgejo), url",
        ),
        (
            "{ provider = \"codecommit\", region = \"eu-west-1\" }",
            "",
            "codecommit is a fleet source only",
        ),
        (
            "{ provider = \"bitbucket\", owner = \"acme\", username = \"u\", token_env = \"HOME\" }",
            "",
            "bitbucket is a fleet source only",
        ),
        (
            "{ provider = \"github\", owner = \"acme\" }",
            "",
            "needs a token: token_env",
        ),
        (
            "{ provider = \"github\", owner = \"acme\", token_env = \"NOPE_UNSET\" }",
            "",
            "NOPE_UNSET, which is not set",
        ),
        (
            "{ provider = \"directory\", path = \"/b\", url = \"x\" }",
            "",
            "remove url",
        ),
        (
            "{ provider = \"directory\", path = \"/b\" }",
            "include = [\"a[\"]",
            "'a['",
        ),
    ];
    for (destination, extra, expected) in cases {
        let config = fleet.config(destination, extra);
        let run = ferry.run("fleet", &["list", "--config", &config]);
        assert_eq!(run.code, 2, "{destination} {extra}: {}", run.stderr);
        assert!(
            run.stderr.contains(expected) && run.stderr.contains("ferry.toml:"),
            "{destination} {extra}: {}",
            run.stderr
        );
    }
}

/// A fleet's relative paths are relative to the config file, as every path in it is.
#[test]
fn discovery_is_relative_to_the_config_not_the_working_directory() {
    let fleet = Fleet::new(&["app.git"]);
    let path = fleet.dir.path().join("ferry.toml");
    std::fs::write(
        &path,
        "[[fleet]]\nname = \"acme\"\nsource = { provider = \"directory\", path = \"src\" }\n\
         destination = { provider = \"directory\", path = \"backup\", create = true }\n",
    )
    .expect("write");
    let ferry = Ferry::new();
    let mut cmd = ferry.command("sync", &["--json", "--config", &path.display().to_string()]);
    cmd.current_dir(Path::new("/"));
    let run = crate::harness::Run::from_output(cmd.output().expect("run"));
    run.assert_code(0);
    assert!(fleet.backup().join("app.git/HEAD").is_file());
}

#[test]
fn serve_discovers_a_fleet_at_start_and_a_members_webhook_syncs_it() {
    use crate::service::{delivery, Serve, SECRET};
    let fleet = Fleet::new(&["app.git", "team/svc.git"]);
    let table = format!(
        "[[fleet]]\nname = \"acme\"\nsource = {{ provider = \"directory\", path = \"{}\" }}\n\
         destination = {{ provider = \"directory\", path = \"{}\", create = true }}\n\
         webhook_secret_file = \"hook-secret\"\n",
        fleet.source().display(),
        fleet.backup().display()
    );
    let serve = Serve::start("", &format!("{table}divergence = \"overwrite\"\n"));
    // Members are named `<fleet>/<path>`; in a URL the `/` is written %2F.
    for (name, path) in [
        ("acme%2Fapp", "app.git"),
        ("acme%2Fteam%2Fsvc", "team/svc.git"),
    ] {
        // The destinations are created by the first sync.
        serve.wait(
            &format!("{path} to be created"),
            std::time::Duration::from_secs(30),
            || fleet.backup().join(path).join("HEAD").is_file(),
        );
        serve.wait_converged(name, &fleet.source().join(path), &fleet.backup().join(path));
    }
    let work = WorkRepo::new().expect("work repo");
    let app = fleet.source().join("app.git");
    work.commit("b.txt", "more", "rewritten").expect("commit");
    work.git(&["push", "-q", "--force", &app.display().to_string(), "main"])
        .expect("push");
    let (headers, body) = delivery("generic", "refs/heads/main", SECRET);
    let (code, answer) = serve.post("/hooks/acme%2Fapp", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    serve.wait_converged("acme%2Fapp", &app, &fleet.backup().join("app.git"));
}

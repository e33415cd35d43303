//! Fleets in a running `ferry serve`: rediscovery without a restart, a failed discovery that
//! stops no member, the fleet's own webhook (organisation and group hooks, CodeCommit events)
//! routed to the member it names, and a fleet of 200 repositories converging, with the status
//! page that shows it (groups, filters, the page of one member) in headless Chromium.

use crate::harness::branches_and_tags;
use crate::service::{codecommit_event, hmac_hex, Serve, SECRET};
use ferry_testkit::{generate_repo, WorkRepo};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tempfile::TempDir;

/// A directory of bare source repositories and the directory their mirrors go to.
struct Dirs {
    dir: TempDir,
}

impl Dirs {
    fn new(repos: &[&str]) -> Dirs {
        let dirs = Dirs {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        for r in repos {
            dirs.add(r);
        }
        dirs
    }

    fn source(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    fn backup(&self) -> PathBuf {
        self.dir.path().join("backup")
    }

    /// A new small bare repository at `path` below the source (three commits on main, two
    /// more refs).
    fn add(&self, path: &str) {
        static SEED: AtomicU64 = AtomicU64::new(1);
        generate_repo(
            &self.source().join(path),
            3,
            64,
            2,
            SEED.fetch_add(1, Ordering::Relaxed),
        )
        .expect("generate a repository");
    }

    /// A commit on main of the source repository at `path`.
    fn push(&self, path: &str, text: &str) {
        let bare = self.source().join(path);
        let work = WorkRepo::new().expect("work repo");
        work.git(&["fetch", "-q", &bare.display().to_string(), "main"])
            .expect("fetch");
        work.git(&["reset", "-q", "--hard", "FETCH_HEAD"])
            .expect("reset");
        work.commit("more.txt", text, text).expect("commit");
        work.git(&["push", "-q", &bare.display().to_string(), "HEAD:main"])
            .expect("push");
    }

    /// The `[[fleet]]` table of the fleet `acme` over these directories.
    fn fleet(&self, extra: &str) -> String {
        format!(
            "[[fleet]]\nname = \"acme\"\nsource = {{ provider = \"directory\", path = \"{}\" }}\n\
             destination = {{ provider = \"directory\", path = \"{}\", create = true }}\n\
             webhook_secret_file = \"hook-secret\"\n{extra}\n",
            self.source().display(),
            self.backup().display()
        )
    }

    fn converged(&self, serve: &Serve, member: &str, path: &str) {
        serve.wait(
            &format!("{path} to be created"),
            Duration::from_secs(60),
            || self.backup().join(path).join("HEAD").is_file(),
        );
        serve.wait_converged(
            &member.replace('/', "%2F"),
            &self.source().join(path),
            &self.backup().join(path),
        );
    }
}

fn mirror_names(serve: &Serve) -> Vec<String> {
    let (code, body) = serve.get("/api/mirrors");
    assert_eq!(code, 200, "{body}");
    let all: Vec<Value> = serde_json::from_str(&body).expect("mirrors json");
    all.iter()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect()
}

fn fleet_status(serve: &Serve) -> Value {
    fleet_named(serve, "acme")
}

fn fleet_named(serve: &Serve, name: &str) -> Value {
    let (code, body) = serve.get("/api/fleets");
    assert_eq!(code, 200, "{body}");
    let all: Vec<Value> = serde_json::from_str(&body).expect("fleets json");
    all.into_iter()
        .find(|f| f["name"] == name)
        .unwrap_or(Value::Null)
}

#[test]
fn rediscovery_adds_a_new_repository_and_drops_a_deleted_one_without_a_restart() {
    let dirs = Dirs::new(&["app.git", "old.git"]);
    let serve = Serve::start("", &dirs.fleet("discover_interval = \"1s\""));
    dirs.converged(&serve, "acme/app", "app.git");
    dirs.converged(&serve, "acme/old", "old.git");

    dirs.add("team/new.git");
    serve.wait(
        "acme/team/new to appear in the API",
        Duration::from_secs(30),
        || mirror_names(&serve).contains(&"acme/team/new".to_owned()),
    );
    dirs.converged(&serve, "acme/team/new", "team/new.git");
    let (_, metrics) = serve.get("/metrics");
    assert!(
        metrics.contains("mirror=\"acme/team/new\""),
        "the new member is in the metrics:\n{metrics}"
    );
    let (_, page) = serve.get("/");
    assert!(
        page.contains("acme/team/new"),
        "the new member is on the page"
    );
    // `ferry runs` knows the fleet's members through the service.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["runs", "acme/team/new", "--json", "--config"])
        .arg(serve.config_path())
        .args(["--listen", serve.base.trim_start_matches("http://")])
        .output()
        .expect("run ferry runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("runs json");
    assert_eq!(runs[0]["mirror"], "acme/team/new", "{runs:?}");

    // A source deleted: on_source_deleted = "keep" (the default) stops syncing the member
    // and leaves its destination.
    std::fs::remove_dir_all(dirs.source().join("old.git")).expect("delete a source");
    serve.wait("acme/old to leave the API", Duration::from_secs(30), || {
        !mirror_names(&serve).contains(&"acme/old".to_owned())
    });
    assert!(dirs.backup().join("old.git/HEAD").is_file(), "kept");
    let status = fleet_status(&serve);
    assert_eq!(status["members"], 2, "{status}");
    assert_eq!(status["error"], Value::Null, "{status}");
}

#[test]
fn a_failed_discovery_is_reported_and_known_members_keep_syncing() {
    let dirs = Dirs::new(&["app.git"]);
    let serve = Serve::start("", &dirs.fleet("discover_interval = \"1s\""));
    dirs.converged(&serve, "acme/app", "app.git");

    // The fleet's inventory (what earlier discoveries found) cannot be read: discovery
    // cannot decide anything. Written again until a discovery has failed on it, since a
    // discovery running at that moment rewrites it.
    let inventory = serve.dir.path().join("data/cache/fleets/acme.json");
    assert!(
        inventory.is_file(),
        "the inventory is at {}",
        inventory.display()
    );
    serve.wait("a discovery to fail", Duration::from_secs(30), || {
        std::fs::write(&inventory, "{ not json").expect("break the inventory");
        fleet_status(&serve)["error"].is_string()
    });
    let status = fleet_status(&serve);
    assert_eq!(status["members"], 1, "{status}");
    let error = status["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("acme.json"),
        "the error names the file: {error}"
    );
    assert!(
        serve.logs().contains("fleet discovery failed"),
        "the failure is logged"
    );

    let (_, page) = serve.get("/");
    assert!(page.contains("discovery failed"), "the page says so");

    // The known member still syncs, on a webhook as before.
    assert!(mirror_names(&serve).contains(&"acme/app".to_owned()));
    dirs.push("app.git", "after the failure");
    let (headers, body) = crate::service::delivery("generic", "refs/heads/main", SECRET);
    let (code, answer) = serve.post("/hooks/acme%2Fapp", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    dirs.converged(&serve, "acme/app", "app.git");
}

/// A GitHub organisation hook's push for the repository `full_name` (id `id`).
fn github_org_push(
    id: u64,
    full_name: &str,
    secret: &str,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = json!({
        "ref": "refs/heads/main",
        "before": "0".repeat(40),
        "after": "1".repeat(40),
        "repository": { "id": id, "name": full_name.rsplit('/').next(), "full_name": full_name },
        "organization": { "login": "acme", "id": 1 },
    })
    .to_string()
    .into_bytes();
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("x-github-event", "push".to_owned()),
        (
            "x-hub-signature-256",
            format!("sha256={}", hmac_hex(secret, &body)),
        ),
    ];
    (headers, body)
}

#[test]
fn the_fleets_own_hook_routes_org_and_group_pushes_and_codecommit_events_to_their_member() {
    let dirs = Dirs::new(&["app.git", "team/svc.git"]);
    // Discovered at start only: a repository added later is found because a push names it.
    let serve = Serve::start("", &dirs.fleet("discover_interval = \"0\""));
    dirs.converged(&serve, "acme/app", "app.git");
    dirs.converged(&serve, "acme/team/svc", "team/svc.git");

    // A GitLab group hook: the project's path with its namespace.
    dirs.push("team/svc.git", "group hook");
    let body = json!({
        "object_kind": "push", "ref": "refs/heads/main", "project_id": 77,
        "project": { "id": 77, "path_with_namespace": "acme/team/svc" },
    })
    .to_string()
    .into_bytes();
    let headers = [
        ("x-gitlab-event", "Push Hook".to_owned()),
        ("x-gitlab-token", SECRET.to_owned()),
    ];
    let (code, answer) = serve.post("/hooks/acme", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["mirror"], "acme/team/svc", "{answer}");
    dirs.converged(&serve, "acme/team/svc", "team/svc.git");

    // A GitHub organisation hook.
    dirs.push("app.git", "org hook");
    let (headers, body) = github_org_push(1296269, "acme/app", SECRET);
    let (code, answer) = serve.post("/hooks/acme", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["mirror"], "acme/app", "{answer}");
    dirs.converged(&serve, "acme/app", "app.git");
    let runs = serve.runs("acme%2Fapp");
    assert_eq!(runs[0]["trigger"], "webhook", "{:?}", runs[0]);

    // A CodeCommit event names the repository by name.
    dirs.push("app.git", "codecommit");
    let event = codecommit_event("referenceUpdated", "main");
    let (code, answer) = serve.post(
        "/hooks/acme",
        &[("authorization", format!("Bearer {SECRET}"))],
        &event,
    );
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["mirror"], "acme/app", "{answer}");
    dirs.converged(&serve, "acme/app", "app.git");

    // Refused like a mirror's hook: a wrong signature, and nothing queued.
    let (headers, body) = github_org_push(1296269, "acme/app", "not the secret");
    let (code, answer) = serve.post("/hooks/acme", &headers, &body);
    assert_eq!(code, 401, "{answer}");
    // Not a push: answered, ignored.
    let ping = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
    let headers = [
        ("x-github-event", "ping".to_owned()),
        (
            "x-hub-signature-256",
            format!("sha256={}", hmac_hex(SECRET, ping)),
        ),
    ];
    let (code, answer) = serve.post("/hooks/acme", &headers, ping);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["queued"], false, "{answer}");
    // No such fleet or mirror.
    let (headers, body) = github_org_push(1, "nobody/app", SECRET);
    let (code, answer) = serve.post("/hooks/nobody", &headers, &body);
    assert_eq!(code, 404, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no mirror or fleet named 'nobody'"),
        "{answer}"
    );

    // A push for a repository no discovery has found: discovered, then synced.
    dirs.add("fresh.git");
    let (headers, body) = github_org_push(4242, "acme/fresh", SECRET);
    let (code, answer) = serve.post("/hooks/acme", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["discovering"], true, "{answer}");
    serve.wait(
        "acme/fresh to appear in the API",
        Duration::from_secs(30),
        || mirror_names(&serve).contains(&"acme/fresh".to_owned()),
    );
    dirs.converged(&serve, "acme/fresh", "fresh.git");
}

/// The `--dump-dom` of `url` in headless Chromium, and a screenshot of it at `shot`.
fn chromium(url: &str, shot: &Path) -> String {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed: run scripts/test.sh (it installs Debian's chromium)");
    let profile = tempfile::tempdir().expect("profile dir");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1400",
    ];
    let user_data = format!("--user-data-dir={}", profile.path().display());
    let dom = Command::new(browser)
        .args(flags)
        .arg(&user_data)
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium");
    let _ = std::fs::remove_file(shot);
    let out = Command::new(browser)
        .args(flags)
        .arg(&user_data)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output()
        .expect("chromium screenshot");
    let png = std::fs::read(shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot at {}",
        shot.display()
    );
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

/// The value of `attribute` on the element with `id`, in a DOM dump.
fn attribute(dom: &str, id: &str, attribute: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!("{attribute}=\"");
    let from = tag.find(&key)? + key.len();
    Some(tag[from..from + tag[from..].find('"')?].to_owned())
}

#[test]
fn a_fleet_of_200_converges_and_the_page_groups_filters_and_plots_it_in_a_browser() {
    const MEMBERS: usize = 200;
    let paths: Vec<String> = (0..MEMBERS).map(|i| format!("repo-{i:03}.git")).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let dirs = Dirs::new(&refs);
    // Two members whose destination path is a directory that is not a repository: they
    // fail every time (not found: a permanent failure, not retried).
    for blocked in ["repo-007.git", "repo-123.git"] {
        let dir = dirs.backup().join(blocked);
        std::fs::create_dir_all(&dir).expect("blocked dir");
        std::fs::write(dir.join("README"), "not a repository").expect("block");
    }
    // One configured mirror, in a group of its own.
    let lone = dirs.dir.path().join("lone.git");
    generate_repo(&lone, 2, 64, 0, 99).expect("generate");
    let configured = format!(
        "[[mirror]]\nname = \"lone\"\nsource = \"{}\"\ndestinations = [\"{}\"]\ncreate = true\n",
        lone.display(),
        dirs.dir.path().join("lone-copy.git").display()
    );
    let serve = Serve::start(
        "workers = 4",
        &format!("{configured}{}", dirs.fleet("discover_interval = \"10m\"")),
    );
    let started = std::time::Instant::now();
    serve.wait(
        "200 members to settle (198 in sync, 2 failing)",
        Duration::from_secs(240),
        || {
            let (_, body) = serve.get("/api/mirrors");
            let all: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
            let members = all.iter().filter(|m| m["fleet"] == "acme");
            let (mut idle, mut failing, mut count) = (0, 0, 0);
            for m in members {
                count += 1;
                match m["state"].as_str() {
                    Some("idle") => idle += 1,
                    Some("failing") => failing += 1,
                    _ => {}
                }
            }
            count == MEMBERS && idle == MEMBERS - 2 && failing == 2
        },
    );
    eprintln!("200 members settled in {:?}", started.elapsed());
    for p in ["repo-000.git", "repo-199.git"] {
        assert_eq!(
            branches_and_tags(&dirs.backup().join(p)),
            branches_and_tags(&dirs.source().join(p))
        );
    }
    // A few more runs of one member, for its plot.
    for i in 0..3 {
        dirs.push("repo-042.git", &format!("plot {i}"));
        let (headers, body) = crate::service::delivery("generic", "refs/heads/main", SECRET);
        let (code, answer) = serve.post("/hooks/acme%2Frepo-042", &headers, &body);
        assert_eq!(code, 202, "{answer}");
        dirs.converged(&serve, "acme/repo-042", "repo-042.git");
    }

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dom = chromium(
        &format!("{}/", serve.base),
        &shots.join("ferry-fleet-page.png"),
    );
    assert_eq!(
        attribute(&dom, "group-acme", "data-total").as_deref(),
        Some("200"),
        "{}",
        &dom[..dom.len().min(3000)]
    );
    assert_eq!(
        attribute(&dom, "group-acme", "data-idle").as_deref(),
        Some("198")
    );
    assert_eq!(
        attribute(&dom, "group-acme", "data-failing").as_deref(),
        Some("2")
    );
    assert_eq!(
        attribute(&dom, "group-configured", "data-total").as_deref(),
        Some("1")
    );
    assert_eq!(
        dom.matches("class=\"mirror\"").count(),
        MEMBERS + 1,
        "every mirror listed"
    );

    let failing = chromium(
        &format!("{}/?state=failing", serve.base),
        &shots.join("ferry-fleet-page-failing.png"),
    );
    let rows: Vec<&str> = failing
        .match_indices("id=\"mirror-")
        .map(|(i, _)| &failing[i..i + 30])
        .collect();
    assert_eq!(rows.len(), 2, "only the failing members: {rows:?}");
    assert!(failing.contains("id=\"mirror-acme/repo-007\""), "{rows:?}");
    assert!(failing.contains("id=\"mirror-acme/repo-123\""), "{rows:?}");
    // The group still counts all its members.
    assert_eq!(
        attribute(&failing, "group-acme", "data-total").as_deref(),
        Some("200")
    );

    let named = chromium(
        &format!("{}/?q=repo-04&state=", serve.base),
        &shots.join("ferry-fleet-page-named.png"),
    );
    assert_eq!(
        named.matches("class=\"mirror\"").count(),
        10,
        "repo-040 to repo-049"
    );

    let one = chromium(
        &format!("{}/mirrors/acme/repo-042", serve.base),
        &shots.join("ferry-fleet-member-page.png"),
    );
    assert!(
        one.contains("<svg"),
        "the plot: {}",
        &one[..one.len().min(3000)]
    );
    let points = one.matches("class=\"point duration\"").count();
    assert!(points >= 4, "one point per run ({points})");
    assert!(
        one.contains("refs/heads/main"),
        "per-ref outcomes are listed"
    );
    let blocked = chromium(
        &format!("{}/mirrors/acme/repo-007", serve.base),
        &shots.join("ferry-fleet-failing-member-page.png"),
    );
    assert!(
        blocked.contains("class=\"error\""),
        "the run's error is shown"
    );
    let (code, _) = serve.get("/mirrors/acme/nothing-here");
    assert_eq!(code, 404);
}

#[test]
fn a_github_fleet_in_serve_routes_org_hooks_by_id_follows_a_rename_survives_a_failed_listing_and_sets_created_default_branches(
) {
    use crate::harness::servers;
    use ferry_testkit::github::{FakeOptions, GitHubFake, RepoSpec};
    use ferry_testkit::WRITER;
    let mut options = FakeOptions::new(WRITER.1);
    options.max_page_size = 3;
    let fake = GitHubFake::start(servers(), options).expect("start the fake GitHub");
    fake.add_org("acme").expect("source org");
    fake.add_org("acme-mirror").expect("destination org");
    // A new commit on `branch`, on top of what it has (if anything).
    let push = |bare: &Path, branch: &str, text: &str| {
        let work = WorkRepo::new().expect("work repo");
        let bare = bare.display().to_string();
        if work.git(&["fetch", "-q", &bare, branch]).is_ok() {
            work.git(&["reset", "-q", "--hard", "FETCH_HEAD"])
                .expect("reset");
        }
        work.commit("f.txt", text, text).expect("commit");
        work.git(&["push", "-q", &bare, &format!("HEAD:refs/heads/{branch}")])
            .expect("push");
    };
    let app = fake
        .add_repo(
            "acme",
            "app",
            RepoSpec {
                default_branch: Some("trunk".into()),
                ..RepoSpec::default()
            },
        )
        .expect("app");
    push(&app.path, "trunk", "app");
    let web = fake
        .add_repo("acme", "web", RepoSpec::default())
        .expect("web");
    push(&web.path, "main", "web");
    let account = |owner: &str| {
        format!(
            "provider = \"github\", owner = \"{owner}\", token_env = \"GH_TOKEN\", api_url = \"{}\", username = \"{}\"",
            fake.base_url(),
            WRITER.0
        )
    };
    let fleet = format!(
        "[[fleet]]\nname = \"gh\"\nsource = {{ {} }}\ndestination = {{ {}, create = true }}\n\
         webhook_secret_file = \"hook-secret\"\ndiscover_interval = \"0\"\n",
        account("acme"),
        account("acme-mirror")
    );
    let serve = Serve::start_with_env("", &fleet, &[("GH_TOKEN", WRITER.1)]);
    let destination = |name: &str| fake.repo("acme-mirror", name).map(|r| r.path);
    for (name, source) in [("app", &app.path), ("web", &web.path)] {
        serve.wait(
            &format!("gh/{name} to be created and synced"),
            Duration::from_secs(60),
            || {
                destination(name)
                    .is_some_and(|d| branches_and_tags(&d) == branches_and_tags(source))
                    && serve.mirror(&format!("gh%2F{name}"))["state"] == "idle"
            },
        );
    }
    // The service set the default branch of the destination it created, after its sync.
    serve.wait(
        "the default branch of acme-mirror/app",
        Duration::from_secs(30),
        || {
            fake.patches()
                .iter()
                .any(|p| p.repo == "app" && p.body["default_branch"] == "trunk")
        },
    );

    // Renamed on the source, not rediscovered yet: the org hook names the new path, its id
    // routes it to the member all the same, and the fleet is discovered again so that the
    // member follows the rename (into the same destination).
    fake.rename_repo("acme", "web", "website").expect("rename");
    let renamed = fake.repo("acme", "website").expect("renamed");
    assert_eq!(renamed.id, web.id);
    push(&renamed.path, "main", "after the rename");
    let (headers, body) = github_org_push(web.id, "acme/website", SECRET);
    let (code, answer) = serve.post("/hooks/gh", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["mirror"], "gh/web", "{answer}");
    assert_eq!(answer["discovering"], true, "{answer}");
    let web_copy = destination("web").expect("web's destination");
    serve.wait(
        "gh/website to sync the push into web's destination",
        Duration::from_secs(30),
        || {
            let names = mirror_names(&serve);
            names.contains(&"gh/website".to_owned())
                && !names.contains(&"gh/web".to_owned())
                && branches_and_tags(&web_copy) == branches_and_tags(&renamed.path)
                && serve.mirror("gh%2Fwebsite")["state"] == "idle"
        },
    );
    assert!(
        fake.repo("acme-mirror", "website").is_none(),
        "no duplicate"
    );

    // The host's API fails while a push asks for a discovery: the fleet says so, and its
    // known members go on syncing.
    fake.fail_next("GET", "/orgs/acme/repos", 500, 1);
    let (headers, body) = github_org_push(987_654, "acme/not-there", SECRET);
    let (code, answer) = serve.post("/hooks/gh", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["discovering"], true, "{answer}");
    serve.wait(
        "the failed listing to be reported",
        Duration::from_secs(30),
        || {
            fleet_named(&serve, "gh")["problems"]
                .as_array()
                .is_some_and(|p| {
                    p.iter()
                        .any(|l| l.as_str().unwrap_or("").contains("incomplete"))
                })
        },
    );
    assert_eq!(fleet_named(&serve, "gh")["members"], 2);
    push(&app.path, "trunk", "after the failure");
    let (headers, body) = github_org_push(app.id, "acme/app", SECRET);
    let (code, answer) = serve.post("/hooks/gh", &headers, &body);
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["mirror"], "gh/app", "{answer}");
    let app_copy = destination("app").expect("app's destination");
    serve.wait(
        "gh/app to sync after the failure",
        Duration::from_secs(30),
        || {
            branches_and_tags(&app_copy) == branches_and_tags(&app.path)
                && serve.mirror("gh%2Fapp")["state"] == "idle"
        },
    );
    assert!(
        !serve.logs().contains(WRITER.1),
        "the token never reaches the logs"
    );
    let violations = fake.violations();
    assert!(
        violations.is_empty(),
        "contract violations: {violations:#?}"
    );
}

//! The persistent bare cache of one source. One fetch into it serves every destination, and
//! it lives across runs, so a one-commit push costs a one-commit fetch. A file lock keeps two
//! ferry processes out of one cache; a damaged or half-written cache is rebuilt.

use crate::engine::ancestry::{self, CatFile};
use crate::engine::git::{failure_from_stderr, Call, Git, GitFailure};
use crate::engine::packet_trace::TracedListing;
use crate::engine::ref_files;
use crate::model::kind::{classify_stderr, ErrorKind};
use crate::model::mirror::short_hash;
use crate::model::refs::{format_ref_listing, parse_ref_listing, Oid, RefMap, RefSelection};
use crate::model::remote::Remote;
use nix::fcntl::{Flock, FlockArg};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A cache whose packed-refs file is at least this large (about 2,000 refs) lists first.
const LIST_FIRST_PACKED_REFS_BYTES: u64 = 128 * 1024;

/// Listing first, up to this many changed or deleted refs are fetched by name.
const NARROW_FETCH_LIMIT: usize = 64;

/// How a sync brings the cache up to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Fetch straight away (beside the destination listings), the fetch's own listing read
    /// from its trace.
    FetchFirst,
    /// List the source (beside the destination listings), fetch only what changed.
    ListFirst,
}

/// Set once a `git fetch --porcelain` was refused as an unknown option (git before 2.41).
static FETCH_PORCELAIN_UNKNOWN: AtomicBool = AtomicBool::new(false);

/// One ref a fetch changed, from a `git fetch --porcelain` line
/// `<flag> <old-oid> <new-oid> <local-ref>` (a zero id for a ref created or pruned).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FetchedRef {
    /// ` ` fast-forward, `+` forced update, `*` new, `-` pruned, `t` tag update, `!` rejected.
    flag: char,
    old: Option<Oid>,
    new: Option<Oid>,
    name: String,
}

/// Git config for a fetch that moves `names`, refs the cache already holds: git's
/// connectivity checks (before the fetch, "do we have it all already?", and after it) then
/// walk from the fetched tips down to those refs' old values only, instead of first marking
/// every ref of the cache as complete, which in a cache of 10,000 refs costs about 10 ms a
/// check. Hiding refs from a check only makes it walk further, never skip an object it would
/// have looked at. (`fetch.hideRefs` is read by git 2.44 and later; older versions ignore it.)
fn checked_against<'n>(names: impl IntoIterator<Item = &'n String>) -> Vec<(String, String)> {
    std::iter::once("refs/".to_owned())
        .chain(names.into_iter().map(|name| format!("!{name}")))
        .map(|value| ("fetch.hideRefs".to_owned(), value))
        .collect()
}

/// Whether a fetch by object id failed because the server would not serve that id: it was
/// not advertised (a protocol v0 server without `uploadpack.allowReachableSHA1InWant`, which
/// git refuses client-side or the server refuses as "not our ref"), or the source moved on
/// and no longer has it. Any other failure is the source's, and fetching by name would fail
/// the same way.
fn refused_an_id(e: &GitFailure) -> bool {
    let message = e.message.to_ascii_lowercase();
    ["not our ref", "unadvertised object", "no such remote ref"]
        .iter()
        .any(|words| message.contains(words))
}

fn parse_fetch_porcelain(stdout: &str) -> Vec<FetchedRef> {
    let oid = |s: &str| Oid::parse(s).filter(|o| !o.as_str().bytes().all(|b| b == b'0'));
    stdout
        .lines()
        .filter_map(|line| {
            let mut chars = line.chars();
            let flag = chars.next()?;
            let mut rest = chars.as_str().strip_prefix(' ')?.splitn(3, ' ');
            let (old, new, name) = (rest.next()?, rest.next()?, rest.next()?);
            (flag != '=').then(|| FetchedRef {
                flag,
                old: oid(old),
                new: oid(new),
                name: name.to_owned(),
            })
        })
        .collect()
}

/// A full fetch that updated at least this many refs is followed by `git pack-refs`.
const PACK_REFS_AFTER: usize = 64;

/// The push repository inside the cache (see [`Cache::push_dir`]).
const PUSH_REPO: &str = "ferry-push.git";

/// How the repositories of [`Cache::sending_repo`] and the files of [`Cache::push_config`]
/// are named inside the cache.
const SENDING_PREFIX: &str = "ferry-send-";

/// Written last when a cache is created: a cache without it was never finished.
const MARKER: &str = "ferry-cache";

/// How many refs the source advertised at the last fetch that saw its whole advertisement
/// (protocol v0), or [`UNREADABLE`], in the cache's repository: whether the next may ask for
/// v0 again (see [`Cache::update`]).
const ADVERTISED: &str = "ferry-advertised-refs";

/// What [`ADVERTISED`] holds when a v0 fetch's trace gave no listing (a ref name the trace
/// escaped, say, which v2 would not list unless it is selected): the next fetches speak v2.
const UNREADABLE: &str = "unreadable";

/// A source that advertised at most this many refs (about 130 kB) is fetched with protocol
/// v0, whose first response is the listing: one round trip less than v2's capabilities and
/// `ls-refs`. v2 lists only the selection; a source advertising more (GitHub's
/// `refs/pull/*` of a busy repository) is fetched with v2.
const V0_ADVERTISED_AT_MOST: usize = 2_000;

/// Who wants a fetch's listing (see [`TracedListing`]): it is sent there once read. When the
/// fetch speaks protocol v0 the listing is the source's whole advertisement, and its count of
/// refs is kept as soon as it is read: a no-op stops the fetch right after.
struct Listing {
    sender: oneshot::Sender<String>,
    advertised: Option<AdvertisedCount>,
}

/// The cache's [`ADVERTISED`] file, what it held when the fetch started, and whether this
/// fetch kept a count in it.
struct AdvertisedCount {
    path: PathBuf,
    known: Option<String>,
    kept: Arc<AtomicBool>,
}

impl AdvertisedCount {
    fn read(path: PathBuf) -> AdvertisedCount {
        let known = fs::read_to_string(&path)
            .ok()
            .map(|text| text.trim().to_owned());
        AdvertisedCount {
            path,
            known,
            kept: Arc::default(),
        }
    }

    /// Whether a fetch may speak v0: the source advertised few refs last time, or that is
    /// not known yet (no file: the v0 fetch finds out).
    fn allows_v0(&self) -> bool {
        self.known.as_deref().is_none_or(|known| {
            known
                .parse::<usize>()
                .is_ok_and(|count| count <= V0_ADVERTISED_AT_MOST)
        })
    }

    /// Keeps `count` when it changed. A hint: a lost or torn write costs
    /// the next fetch one v0 advertisement, so it is neither synced nor renamed into place.
    fn keep(&self, count: usize) {
        self.kept.store(true, Ordering::Relaxed);
        let count = count.to_string();
        if self.known.as_deref() != Some(count.as_str()) {
            if let Err(e) = fs::write(&self.path, format!("{count}\n")) {
                tracing::debug!(error = %e, "cannot keep the count of the source's refs");
            }
        }
    }
}

/// The refs of a listing (`ls-remote` lines), without HEAD and peeled tags.
fn advertised_refs(listing: &str) -> usize {
    listing
        .lines()
        .filter(|line| {
            line.split_once(' ')
                .is_some_and(|(_, name)| name.starts_with("refs/") && !name.ends_with("^{}"))
        })
        .count()
}

/// Where a source's cache and the records of its destinations live under the cache root.
#[derive(Debug, Clone)]
pub struct CachePaths {
    pub repo: PathBuf,
    pub lock: PathBuf,
    pub records: PathBuf,
}

impl CachePaths {
    pub fn new(root: &Path, source: &Remote) -> CachePaths {
        let id = short_hash(source.identity());
        let stem = format!("{}-{id}", source.slug());
        CachePaths {
            repo: root.join(format!("{stem}.git")),
            lock: root.join(format!("{stem}.lock")),
            records: root.join(format!("{stem}.records")),
        }
    }
}

/// An open, locked cache. The lock is held until this is dropped.
pub struct Cache {
    pub paths: CachePaths,
    /// Set when the cache's own objects were found unreadable (a corrupt pack, a missing
    /// object). The engine then rebuilds the cache and runs the mirror once more.
    damaged: AtomicBool,
    /// Ancestry this run's fetches already established: `(old, new)` of every ref a fetch
    /// moved, true for a fast-forward, false for a forced update. The planner's usual question
    /// (is the destination's value, the cache's old one, an ancestor of the new?) is then
    /// answered without reading the history again.
    learned: Mutex<HashMap<(Oid, Oid), bool>>,
    /// Set when a fetch left many loose ref files: [`Cache::housekeeping`] packs them.
    pack_refs_due: AtomicBool,
    _lock: Flock<File>,
}

/// A repository made by [`Cache::sending_repo`]; removed when dropped.
pub struct SendingRepo {
    dir: tempfile::TempDir,
}

impl SendingRepo {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Cache {
    /// Opens (creating or rebuilding as needed) the cache for `source`, waiting up to `wait`
    /// for another ferry process to release it.
    pub async fn open(
        root: &Path,
        source: &Remote,
        git: &Git,
        wait: Duration,
    ) -> Result<Cache, GitFailure> {
        fs::create_dir_all(root).map_err(|e| {
            io_failure(
                &format!("cannot create cache directory {}", root.display()),
                e,
            )
        })?;
        let paths = CachePaths::new(root, source);
        let lock = lock(&paths.lock, wait).await?;
        let cache = Cache {
            paths,
            damaged: AtomicBool::new(false),
            learned: Mutex::default(),
            pack_refs_due: AtomicBool::new(false),
            _lock: lock,
        };
        if !cache.is_intact() {
            cache.rebuild(git).await?;
        } else {
            cache.clear_stale_sending_repos();
        }
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.paths.repo
    }

    /// Looks at what a git call in the cache printed. When it speaks of unreadable objects, the
    /// cache's own objects are checked, and only a failed check marks the cache damaged: a
    /// transfer prints a remote's trouble in the same words (a corrupt source's data failing to
    /// unpack here, a local or SSH destination's receive-pack failing on its own history).
    pub async fn note_damage(&self, stderr: &str, git: &Git) {
        if mentions_damage(stderr) {
            self.check_objects(git).await;
        }
    }

    /// Checks the cache's own objects and marks the cache damaged when they fail to read.
    async fn check_objects(&self, git: &Git) {
        if self.is_damaged() {
            return;
        }
        if self.objects_unreadable(git).await {
            tracing::warn!(cache = %self.dir().display(), "the cache's own objects are unreadable");
            self.damaged.store(true, Ordering::Relaxed);
        } else {
            tracing::info!(cache = %self.dir().display(), "git spoke of unreadable objects, but the cache's objects read fine; the failure is the other side's");
        }
    }

    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    /// Throws away the cache's contents and starts empty (the next fetch refills it).
    pub async fn reset(&self, git: &Git) -> Result<(), GitFailure> {
        self.rebuild(git).await?;
        self.damaged.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Cheap structural check: a finished init and the files git cannot work without.
    fn is_intact(&self) -> bool {
        let repo = &self.paths.repo;
        repo.join(MARKER).is_file()
            && repo.join("HEAD").is_file()
            && repo.join("objects").is_dir()
            && repo.join("refs").is_dir()
            && repo
                .join(PUSH_REPO)
                .join("objects/info/alternates")
                .is_file()
            && !repo.join("shallow").exists()
    }

    /// The repository pushes run in: no refs of its own, the cache's objects borrowed through
    /// `objects/info/alternates`. git push matches every refspec against every local ref
    /// (with a few formatted candidate names per pair), which is quadratic; from a repository
    /// with no refs, pushing 1,000 refs out of a 10,000-ref cache takes 0.5 s instead of 5.
    pub fn push_dir(&self) -> PathBuf {
        self.paths.repo.join(PUSH_REPO)
    }

    /// A repository holding exactly `refs` (name and value), the cache's objects borrowed
    /// like the push repository's, for one push by a pattern refspec: git matches a pattern's
    /// refs against the destination's through a sorted index, where each explicit refspec is
    /// compared with every destination ref (see `engine::sync::pushes_in_bulk`). Its own
    /// directory, so that destinations pushing at once never see each other's refs; removed
    /// when dropped.
    pub async fn sending_repo(&self, refs: &RefMap, git: &Git) -> Result<SendingRepo, GitFailure> {
        let dir = tempfile::Builder::new()
            .prefix(SENDING_PREFIX)
            .suffix(".git")
            .tempdir_in(&self.paths.repo)
            .map_err(|e| io_failure("cannot create a repository to push from", e))?;
        let path = dir.path().display().to_string();
        git.run(
            &self.paths.repo,
            // The files ref format, whatever the user's default: ferry writes `packed-refs`
            // itself below (a git older than 2.45 ignores the setting and has no other).
            &[
                "-c",
                "init.defaultRefFormat=files",
                "init",
                "--bare",
                "--quiet",
                "--template=",
                &path,
            ],
            Call::default(),
        )
        .await?
        .check("creating a repository to push from")?;
        fs::write(
            dir.path().join("objects/info/alternates"),
            "../../objects\n",
        )
        .map_err(|e| io_failure("cannot link the repository to push from to the cache", e))?;
        // One `packed-refs` file, git's documented format, sorted as git sorts (bytewise, as
        // a BTreeMap of names is): `git update-ref` would write a loose file per ref, half a
        // second for 10,000 of them.
        fs::write(dir.path().join("packed-refs"), format_ref_listing(refs))
            .map_err(|e| io_failure("cannot write the refs to push", e))?;
        Ok(SendingRepo { dir })
    }

    /// A file of git configuration for one push (see `engine::sync::push_listed_creates`),
    /// beside the cache's repositories; removed when dropped.
    pub fn push_config(&self, contents: &str) -> Result<tempfile::TempPath, GitFailure> {
        use std::io::Write;
        let mut file = tempfile::Builder::new()
            .prefix(SENDING_PREFIX)
            .suffix(".config")
            .tempfile_in(&self.paths.repo)
            .map_err(|e| io_failure("cannot create the list of refs to push", e))?;
        file.write_all(contents.as_bytes())
            .map_err(|e| io_failure("cannot write the list of refs to push", e))?;
        Ok(file.into_temp_path())
    }

    /// Removes repositories [`Cache::sending_repo`] and files [`Cache::push_config`] left
    /// behind by a process that died mid-push. Safe: the cache's lock is held, so no other
    /// process is pushing from it.
    fn clear_stale_sending_repos(&self) {
        let Ok(entries) = fs::read_dir(&self.paths.repo) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(SENDING_PREFIX)
            {
                let path = entry.path();
                let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale repository or file a push left in the cache");
                }
            }
        }
    }

    /// Throws the cache away and creates an empty one (in a temporary directory, renamed into
    /// place, so a crash never leaves a half-made cache that looks finished).
    async fn rebuild(&self, git: &Git) -> Result<(), GitFailure> {
        let repo = &self.paths.repo;
        if repo.exists() {
            tracing::warn!(cache = %repo.display(), "cache is damaged or unfinished; rebuilding it");
            fs::remove_dir_all(repo).map_err(|e| {
                io_failure(
                    &format!("cannot remove damaged cache {}", repo.display()),
                    e,
                )
            })?;
        }
        let tmp = repo.with_extension(format!("tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .map_err(|e| io_failure("cannot clear a stale temporary cache", e))?;
        }
        let parent = repo.parent().unwrap_or(Path::new("."));
        let tmp_str = tmp.display().to_string();
        git.run(
            parent,
            &["init", "--bare", "--quiet", &tmp_str],
            Call::default(),
        )
        .await?
        .check("creating the cache")?;
        let push_repo = tmp.join(PUSH_REPO);
        let push_str = push_repo.display().to_string();
        git.run(
            parent,
            &["init", "--bare", "--quiet", &push_str],
            Call::default(),
        )
        .await?
        .check("creating the cache's push repository")?;
        // Relative to the push repository's objects directory: survives moving the cache.
        fs::write(push_repo.join("objects/info/alternates"), "../../objects\n")
            .map_err(|e| io_failure("cannot link the push repository to the cache", e))?;
        for (key, value) in [
            // Nothing in the cache is ever a working branch: no reflogs, no tracking config.
            ("core.logAllRefUpdates", "false"),
            ("gc.autoDetach", "false"),
            // Housekeeping runs on ferry's schedule (after a fetch, beside the pushes), not
            // inside every fetch.
            ("maintenance.auto", "false"),
        ] {
            git.run(&tmp, &["config", key, value], Call::default())
                .await?
                .check("configuring the cache")?;
        }
        fs::write(
            tmp.join(MARKER),
            "a ferry cache; safe to delete (ferry rebuilds it)\n",
        )
        .map_err(|e| io_failure("cannot write the cache marker", e))?;
        fs::rename(&tmp, repo)
            .map_err(|e| io_failure("cannot move the new cache into place", e))?;
        Ok(())
    }

    /// How to bring this cache up to date. A cache with many refs lists the source first and
    /// fetches only what changed: for it a fetch's own ref advertisement and connectivity
    /// check cost several times a listing. Small caches fetch straight away, which is the
    /// shorter path when something did change (the usual reason to sync): one git process
    /// and one round trip less, and the fetch's own listing decides a no-op as early.
    pub fn strategy(&self) -> Strategy {
        let packed = fs::metadata(self.dir().join("packed-refs")).map_or(0, |m| m.len());
        if packed >= LIST_FIRST_PACKED_REFS_BYTES {
            Strategy::ListFirst
        } else {
            Strategy::FetchFirst
        }
    }

    /// Fetches the selected refs of the source into the cache (forced, pruned) and returns how
    /// many refs changed. After a large fetch the refs are packed. A failure that looks like a
    /// damaged cache rebuilds it and fetches once more. `listing`, when given, gets the
    /// source's refs (as `ls-remote` prints them) as soon as the fetch has listed them, when
    /// its trace shows that (see [`TracedListing`]); dropped without them otherwise.
    pub async fn update(
        &self,
        source: &Remote,
        selection: &RefSelection,
        git: &Git,
        listing: Option<oneshot::Sender<String>>,
    ) -> Result<usize, GitFailure> {
        // A fetch whose listing is wanted early speaks v0 while the source advertises few
        // refs, or when that is not known yet (one v0 fetch finds out); the count is kept for
        // the next.
        let advertised = AdvertisedCount::read(self.dir().join(ADVERTISED));
        let v0 = listing.is_some() && advertised.allows_v0();
        let config = match v0 {
            true => vec![("protocol.version".to_owned(), "0".to_owned())],
            false => Vec::new(),
        };
        let (path, kept) = (advertised.path.clone(), advertised.kept.clone());
        let listing = listing.map(|sender| Listing {
            sender,
            advertised: v0.then_some(advertised),
        });
        let fetched = self
            .fetch(
                source,
                selection.fetch_refspecs(),
                true,
                &config,
                git,
                listing,
            )
            .await;
        if v0 && fetched.is_ok() && !kept.load(Ordering::Relaxed) {
            // The fetch ran to its end without a listing in its trace (once: v2 follows).
            if let Err(e) = fs::write(&path, format!("{UNREADABLE}\n")) {
                tracing::debug!(error = %e, "cannot keep the count of the source's refs");
            }
        }
        let updated = match fetched {
            Err(e) if self.fetch_failed_on_damage(&e, git).await => {
                self.reset(git).await?;
                self.fetch(source, selection.fetch_refspecs(), true, &[], git, None)
                    .await?
            }
            other => other?,
        };
        if updated >= PACK_REFS_AFTER {
            // Thousands of loose ref files make every later fetch and listing slow; they are
            // packed beside the pushes (see `housekeeping`), off a first sync's path.
            self.pack_refs_due.store(true, Ordering::Relaxed);
        }
        Ok(updated)
    }

    /// Brings the cache from `cached` (its refs) up to the source's `listing` (both within the
    /// selection) and returns the cache's refs, which are then the source's. Changed refs are
    /// fetched by their listed ids (by name where the server refuses that), so the server
    /// advertises only those, or none; refs the source deleted are deleted locally (one `git
    /// update-ref --stdin`); many changes take one full fetch instead.
    pub async fn catch_up(
        &self,
        source: &Remote,
        selection: &RefSelection,
        cached: RefMap,
        listing: &RefMap,
        git: &Git,
    ) -> Result<RefMap, GitFailure> {
        let changed: Vec<String> = listing
            .iter()
            .filter(|(name, oid)| cached.get(*name) != Some(*oid))
            .map(|(name, _)| name.clone())
            .collect();
        let deleted: Vec<String> = cached
            .keys()
            .filter(|name| !listing.contains_key(*name))
            .cloned()
            .collect();
        if changed.len() + deleted.len() > NARROW_FETCH_LIMIT {
            self.update(source, selection, git, None).await?;
            return self.refs(selection, git).await;
        }
        let mut refs = cached;
        if !changed.is_empty() {
            // By the listed ids first: a fetch naming only ids lists no refs over protocol v2
            // (one request less over HTTP). A server that refuses ids it did not advertise
            // (protocol v0) gets the refs by name.
            let by_id: Vec<String> = changed
                .iter()
                .filter_map(|name| Some(format!("+{}:{name}", listing.get(name)?)))
                .collect();
            // Refs the cache already holds are moved: connectivity is checked against their
            // old values alone. A new ref is checked against every ref, as git does.
            let config = if changed.iter().all(|name| refs.contains_key(name)) {
                checked_against(&changed)
            } else {
                Vec::new()
            };
            let fetched = match self.fetch(source, by_id, false, &config, git, None).await {
                Ok(_) => Ok(()),
                Err(e) if refused_an_id(&e) => {
                    tracing::debug!(error = %e.message, "fetching the listed ids failed; fetching the refs by name");
                    let by_name: Vec<String> = changed
                        .iter()
                        .map(|name| format!("+{name}:{name}"))
                        .collect();
                    self.fetch(source, by_name, false, &config, git, None)
                        .await
                        .map(|_| ())
                }
                Err(e) => Err(e),
            };
            if let Err(e) = fetched {
                if !self.fetch_failed_on_damage(&e, git).await {
                    return Err(e);
                }
                self.reset(git).await?;
                self.update(source, selection, git, None).await?;
                return self.refs(selection, git).await;
            }
            // Read back what the fetch wrote: the source may have moved since it was listed.
            let fresh = self.refs_named(&changed, git).await?;
            for name in changed {
                match fresh.get(&name) {
                    Some(oid) => refs.insert(name, oid.clone()),
                    None => refs.remove(&name),
                };
            }
        }
        if !deleted.is_empty() {
            // All in one transaction of one git.
            let mut deleting = git.session(self.dir(), &["update-ref", "--stdin"])?;
            for name in &deleted {
                deleting.send(&format!("delete {name}")).await?;
            }
            deleting
                .finish()
                .await?
                .check("deleting the refs the source deleted from the cache")?;
            for name in deleted {
                refs.remove(&name);
            }
        }
        Ok(refs)
    }

    /// Fetches only the named refs of the source into the cache (forced, nothing pruned) and
    /// returns their values and whether the fetch changed any. Fails when a named ref is not
    /// on the source (git refuses an explicit refspec it cannot find) or the fetch fails; the
    /// caller then fetches the whole selection, which also repairs a damaged cache.
    pub async fn fetch_refs(
        &self,
        source: &Remote,
        names: &BTreeSet<String>,
        git: &Git,
    ) -> Result<(RefMap, bool), GitFailure> {
        let refspecs: Vec<String> = names.iter().map(|name| format!("+{name}:{name}")).collect();
        let updated = self.fetch(source, refspecs, false, &[], git, None).await?;
        let refs = self.refs_named(names, git).await?;
        if let Some(missing) = names.iter().find(|name| !refs.contains_key(*name)) {
            return Err(GitFailure::new(
                ErrorKind::Other,
                format!("the cache has no {missing} after fetching it"),
            ));
        }
        Ok((refs, updated > 0))
    }

    /// Brings the named refs to the ids an event claims the source has now for them, the
    /// cheap way, and returns their values and whether anything was fetched:
    /// - the cache holds exactly those ids already (a poll, another mirror of the same source,
    ///   a redelivered event): nothing to fetch;
    /// - else, when the cache has every named ref, one fetch of exactly those ids into them.
    ///   A fetch that names only object ids lists no refs over protocol v2 (one request less
    ///   over HTTP, no advertisement of thousands of refs). It moves a ref only by
    ///   fast-forward: an id that is not ahead of the cache's value (a stale or redelivered
    ///   event, a force-push) is refused by git, and then the caller fetches by name.
    ///
    /// `None` when any name has no claim, is new to the cache, or the fetch failed or was
    /// refused (an id the source does not have, a server that only speaks protocol v0).
    pub async fn reach_claimed(
        &self,
        source: &Remote,
        names: &BTreeSet<String>,
        claimed: &RefMap,
        git: &Git,
    ) -> Option<(RefMap, bool)> {
        let at_claims =
            |refs: &RefMap| names.iter().all(|name| refs.get(name) == claimed.get(name));
        if names.iter().any(|name| !claimed.contains_key(name)) {
            return None;
        }
        let cached = self.refs_named(names, git).await.ok()?;
        if at_claims(&cached) {
            tracing::debug!("the cache holds what the event says; no fetch");
            return Some((cached, false));
        }
        if cached.len() != names.len() {
            return None;
        }
        // No `+`: git refuses to move a ref other than forward.
        let refspecs = names
            .iter()
            .filter_map(|name| Some(format!("{}:{name}", claimed.get(name)?)))
            .collect();
        if let Err(e) = self
            .fetch(source, refspecs, false, &checked_against(names), git, None)
            .await
        {
            tracing::debug!(error = %e.message, "fetching the event's ids failed or was refused; fetching the refs by name");
            return None;
        }
        let refs = self.refs_named(names, git).await.ok()?;
        at_claims(&refs).then_some((refs, true))
    }

    /// Removes the lock files of the cache's repository that a failed git call could not
    /// create (`Unable to create '<path>.lock': File exists.`); whether it removed any. Every
    /// git call in the cache runs under the cache's lock, so such a file is stale: a git
    /// killed with its ferry (`kill -9`, a Lambda timeout) left it, and without this every
    /// later fetch of the ref would fail the same way.
    fn remove_stale_locks(&self, stderr: &str) -> bool {
        let Ok(repo) = self.dir().canonicalize() else {
            return false;
        };
        let mut removed = false;
        for named in locks_git_could_not_create(stderr) {
            let path = Path::new(named);
            let inside = path
                .parent()
                .and_then(|dir| dir.canonicalize().ok())
                .is_some_and(|dir| dir.starts_with(&repo));
            if inside && path.is_file() && fs::remove_file(path).is_ok() {
                tracing::warn!(lock = %path.display(), "removed a lock file a killed git left in the cache");
                removed = true;
            }
        }
        removed
    }

    /// Whether a failed fetch is explained by a damaged cache (then: rebuild, fetch again).
    async fn fetch_failed_on_damage(&self, e: &GitFailure, git: &Git) -> bool {
        let damaged =
            e.kind == ErrorKind::Other && (self.is_damaged() || self.tips_unreadable(git).await);
        if damaged {
            tracing::warn!(error = %e.message, "fetch failed on a damaged cache; rebuilding and fetching again");
        }
        damaged
    }

    /// One `git fetch` into the cache (explicit refspecs, no remote configuration) with the
    /// given git config (see [`checked_against`]). Returns how many refs it updated.
    async fn fetch(
        &self,
        source: &Remote,
        refspecs: Vec<String>,
        prune: bool,
        config: &[(String, String)],
        git: &Git,
        listing: Option<Listing>,
    ) -> Result<usize, GitFailure> {
        let what = format!("fetch from the source {}", source.display());
        let fetch = |porcelain: bool, listing: Option<Listing>| {
            let mut args: Vec<String> = vec![
                "fetch".into(),
                "--no-tags".into(),
                "--no-write-fetch-head".into(),
                "--no-recurse-submodules".into(),
                "--progress".into(),
            ];
            if porcelain {
                args.push("--porcelain".into());
            }
            if prune {
                args.push("--prune".into());
            }
            args.push("--".into());
            args.push(source.git_url().into());
            args.extend(refspecs.iter().cloned());
            async move {
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                let call = Call {
                    remote: Some(source),
                    transfer: true,
                    config,
                };
                let Some(listing) = listing else {
                    return git.run(self.dir(), &argv, call).await;
                };
                let Listing { sender, advertised } = listing;
                let (mut answer, mut sender) = (TracedListing::default(), Some(sender));
                git.run_tracing_packets(self.dir(), &argv, call, move |line| {
                    if let Some(refs) = answer.line(line) {
                        if let Some(advertised) = &advertised {
                            advertised.keep(advertised_refs(&refs));
                        }
                        if let Some(sender) = sender.take() {
                            let _ = sender.send(refs);
                        }
                    }
                })
                .await
            }
        };
        let porcelain = !FETCH_PORCELAIN_UNKNOWN.load(Ordering::Relaxed);
        let mut out = fetch(porcelain, listing).await?;
        if porcelain && !out.success && out.stderr.contains("unknown option `porcelain'") {
            // git older than 2.41: the summary on stderr still counts the updates.
            FETCH_PORCELAIN_UNKNOWN.store(true, Ordering::Relaxed);
            out = fetch(false, None).await?;
        }
        let porcelain = porcelain && !FETCH_PORCELAIN_UNKNOWN.load(Ordering::Relaxed);
        if !out.success && self.remove_stale_locks(&out.stderr) {
            out = fetch(porcelain, None).await?;
        }
        self.note_damage(&out.stderr, git).await;
        if !out.success {
            let mut failure = failure_from_stderr(&what, &out.stderr);
            if failure.kind == ErrorKind::ShallowSource {
                failure.message = format!(
                    "the source {} is a shallow clone: {}",
                    source.display(),
                    failure.message
                );
            }
            return Err(failure);
        }
        // A shallow source makes git skip refs with only a warning, and exit 0.
        if self.dir().join("shallow").exists()
            || classify_stderr(&out.stderr) == ErrorKind::ShallowSource
        {
            return Err(GitFailure::new(
                ErrorKind::ShallowSource,
                format!(
                    "the source {} is a shallow clone; ferry mirrors only complete histories",
                    source.display()
                ),
            ));
        }
        if !porcelain {
            // git lists each updated, created or pruned ref as "... <src> -> <dst>"; nothing
            // at all when nothing changed.
            return Ok(out.stderr.lines().filter(|l| l.contains(" -> ")).count());
        }
        let updates = parse_fetch_porcelain(&out.stdout);
        if let Ok(mut learned) = self.learned.lock() {
            for u in &updates {
                if let (Some(old), Some(new), ' ' | '+') = (&u.old, &u.new, u.flag) {
                    learned.insert((old.clone(), new.clone()), u.flag == ' ');
                }
            }
        }
        Ok(updates.len())
    }

    /// `git pack-refs` and `git commit-graph write` when a fetch brought many refs (left many
    /// loose ref files), then `git gc --auto` (fetches run
    /// with automatic maintenance off, so that a no-op fetch does not pay for it); run
    /// alongside the pushes after something was fetched (they read the cache's objects, not its
    /// refs). Failures are only logged: a cache that is never packed is slower, not wrong.
    pub async fn housekeeping(&self, git: &Git) {
        if self.pack_refs_due.swap(false, Ordering::Relaxed) {
            // After many refs came in: their files packed into one, and a commit graph, from
            // which every later fetch's connectivity check and push (each walks from every
            // ref's tip) read those tips instead of parsing each commit (4 ms and 3 ms less
            // with 10,000 refs here). `gc --auto` rewrites both later.
            let steps: [&[&str]; 2] = [
                &["pack-refs", "--all"],
                &["commit-graph", "write", "--reachable"],
            ];
            for args in steps {
                match git.run(self.dir(), args, Call::default()).await {
                    Ok(out) if out.success => {}
                    Ok(out) => {
                        tracing::warn!(command = args[0], stderr = %out.stderr, "git failed in the cache")
                    }
                    Err(e) => {
                        tracing::warn!(command = args[0], error = %e.message, "git failed in the cache")
                    }
                }
            }
        }
        if !may_need_gc(self.dir()) {
            return;
        }
        match git
            .run(self.dir(), &["gc", "--auto", "--quiet"], Call::default())
            .await
        {
            Ok(out) if out.success => {}
            Ok(out) => tracing::warn!(stderr = %out.stderr, "git gc --auto failed in the cache"),
            Err(e) => tracing::warn!(error = %e.message, "git gc --auto failed in the cache"),
        }
    }

    /// The cache's refs within the selection.
    pub async fn refs(&self, selection: &RefSelection, git: &Git) -> Result<RefMap, GitFailure> {
        let mut refs = self.all_refs(git).await?;
        refs.retain(|name, _| selection.selects(name));
        Ok(refs)
    }

    /// Every ref of the cache: read from its files (see [`ref_files`]), else listed by git.
    async fn all_refs(&self, git: &Git) -> Result<RefMap, GitFailure> {
        match ref_files::read(self.dir()) {
            Ok(Some(refs)) => return Ok(refs),
            Ok(None) => {}
            Err(e) => return Err(io_failure("reading the cache's refs", e)),
        }
        let out = git
            .run(
                self.dir(),
                &["for-each-ref", "--format=%(objectname) %(refname)"],
                Call::default(),
            )
            .await?
            .check("listing the cache's refs")?;
        Ok(parse_ref_listing(&out.stdout))
    }

    /// The values of `names` in the cache (names it does not have are left out).
    async fn refs_named<'n>(
        &self,
        names: impl IntoIterator<Item = &'n String> + Clone,
        git: &Git,
    ) -> Result<RefMap, GitFailure> {
        match ref_files::read_named(self.dir(), names.clone()) {
            Ok(Some(refs)) => return Ok(refs),
            Ok(None) => {}
            Err(e) => return Err(io_failure("reading the cache's refs", e)),
        }
        let all = self.all_refs(git).await?;
        Ok(names
            .into_iter()
            .filter_map(|name| Some((name.clone(), all.get(name)?.clone())))
            .collect())
    }

    /// Whether the object every ref points at can be read (objecttype makes git open it).
    async fn tips_unreadable(&self, git: &Git) -> bool {
        if !self.is_intact() {
            return true;
        }
        match git
            .run(
                self.dir(),
                &["for-each-ref", "--format=%(objecttype)"],
                Call::default(),
            )
            .await
        {
            Ok(out) => !out.success || reports_errors(&out.stderr),
            Err(_) => true,
        }
    }

    /// Whether any object reachable from the cache's refs fails to read: each is read in full
    /// and its hash checked, by git alone in the cache, with no remote involved. (rev-list
    /// exits 0 after some of these errors, so its words count too.) A check that cannot run
    /// (a timeout) proves nothing and says no.
    async fn objects_unreadable(&self, git: &Git) -> bool {
        if !self.is_intact() {
            return true;
        }
        match git
            .run(
                self.dir(),
                &[
                    "rev-list",
                    "--objects",
                    "--verify-objects",
                    "--quiet",
                    "--all",
                ],
                Call::default(),
            )
            .await
        {
            Ok(out) => !out.success || reports_errors(&out.stderr),
            Err(e) => {
                tracing::warn!(error = %e.message, "could not check the cache's objects");
                false
            }
        }
    }

    /// Answers the planner's ancestry questions: for each `(ancestor, descendant)` pair, whether
    /// `ancestor` is an ancestor of (or equal to) `descendant` per the cache's history. One
    /// `git cat-file --batch` serves them all (see [`ancestry`]). Objects the cache does not
    /// have (commits pushed only to a destination) answer false; a hole in the cache's history
    /// answers false too, and gets the cache checked.
    pub async fn ancestry(
        &self,
        questions: &[(Oid, Oid)],
        git: &Git,
    ) -> Result<Vec<bool>, GitFailure> {
        let learned: Vec<Option<bool>> = match self.learned.lock() {
            Ok(learned) => questions
                .iter()
                .map(|(a, d)| {
                    if a == d {
                        Some(true)
                    } else {
                        learned.get(&(a.clone(), d.clone())).copied()
                    }
                })
                .collect(),
            Err(_) => vec![None; questions.len()],
        };
        let open: Vec<(Oid, Oid)> = questions
            .iter()
            .zip(&learned)
            .filter(|(_, known)| known.is_none())
            .map(|(q, _)| q.clone())
            .collect();
        let mut answers = self.read_ancestry(&open, git).await?.into_iter();
        Ok(learned
            .into_iter()
            .map(|known| known.or_else(|| answers.next()).unwrap_or(false))
            .collect())
    }

    /// [`Cache::ancestry`] for questions only the history can answer.
    async fn read_ancestry(
        &self,
        questions: &[(Oid, Oid)],
        git: &Git,
    ) -> Result<Vec<bool>, GitFailure> {
        if questions.is_empty() {
            return Ok(Vec::new());
        }
        let mut reader = CatFile {
            session: git.session(self.dir(), &["cat-file", "--batch"])?,
        };
        let answered = ancestry::answer(&mut reader, questions).await;
        let stderr = match reader.session.finish().await {
            Ok(out) => out.stderr,
            Err(_) => String::new(),
        };
        match answered {
            Ok(answered) => {
                if answered.history_missing {
                    self.check_objects(git).await;
                } else {
                    self.note_damage(&stderr, git).await;
                }
                Ok(answered.answers)
            }
            Err(e) if e.kind == ErrorKind::Timeout => Err(e),
            // git stopped answering: it could not read something in the cache.
            Err(e) => {
                self.check_objects(git).await;
                Err(if stderr.is_empty() {
                    e
                } else {
                    failure_from_stderr("reading the cache's history", &stderr)
                })
            }
        }
    }
}

async fn lock(path: &Path, wait: Duration) -> Result<Flock<File>, GitFailure> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
    };
    lock_waiting(open, &format!("the cache lock {}", path.display()), wait).await
}

/// An exclusive `flock` on the file `open` opens (a lock file, a directory), waited for up to
/// `wait` while another process holds it; released when dropped, or when the process dies.
/// `what` names it in messages.
pub async fn lock_waiting(
    open: impl Fn() -> std::io::Result<File>,
    what: &str,
    wait: Duration,
) -> Result<Flock<File>, GitFailure> {
    let started = Instant::now();
    let mut logged = false;
    loop {
        let file = open().map_err(|e| io_failure(&format!("cannot open {what}"), e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                if started.elapsed() >= wait {
                    return Err(GitFailure::new(
                        ErrorKind::Timeout,
                        format!(
                            "another ferry process held {what} for over {}; wait for it to finish, or raise --timeout",
                            humantime::format_duration(wait)
                        ),
                    ));
                }
                if !logged {
                    tracing::info!(
                        lock = what,
                        "another ferry process holds this lock; waiting"
                    );
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err((_, errno)) => {
                return Err(io_failure(&format!("cannot lock {what}"), errno.into()));
            }
        }
    }
}

/// The `*.lock` paths git names in `Unable to create '<path>': File exists.` lines; not in
/// lines the remote side printed (`remote: `), which are not about this repository.
fn locks_git_could_not_create(stderr: &str) -> impl Iterator<Item = &str> {
    stderr.lines().filter_map(|line| {
        if line.starts_with("remote:") {
            return None;
        }
        let (_, rest) = line.split_once("Unable to create '")?;
        let (path, _) = rest.split_once("': File exists")?;
        path.ends_with(".lock").then_some(path)
    })
}

/// Whether git's stderr speaks of unreadable objects, which makes the cache worth checking
/// (it proves nothing by itself). Lines relayed from the other side (`remote: ...`) are about
/// the remote; but a destination that cannot unpack what the cache sent may have been sent
/// garbled objects.
fn mentions_damage(stderr: &str) -> bool {
    stderr
        .lines()
        .map(str::to_ascii_lowercase)
        .filter(|l| !l.starts_with("remote:"))
        .any(|l| {
            [
                "inflate:",
                "is corrupt",
                "corrupt packed object",
                "bad packed object",
                "packfile",
                "bad object",
                "missing blob",
                "missing tree",
                "missing commit",
                "unable to read",
                "loose object",
                "remote unpack failed",
            ]
            .iter()
            .any(|needle| l.contains(needle))
        })
}

/// Whether a local check printed an error: `error: ...` or `fatal: ...`.
fn reports_errors(stderr: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.starts_with("error") || l.starts_with("fatal"))
}

/// Whether `git gc --auto` could find work in `repo`: git's own two tests with its default
/// limits, made here first so that the usual sync starts no process for them. More loose
/// objects than `gc.auto` (6,700), estimated as git does from the `objects/17` fan-out
/// directory, or more packs than `gc.autoPackLimit` (50).
fn may_need_gc(repo: &Path) -> bool {
    const GC_AUTO: usize = 6700;
    const GC_AUTO_PACK_LIMIT: usize = 50;
    let count = |dir: &Path, counts: &dyn Fn(&str) -> bool| {
        fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_str().is_some_and(counts))
                .count()
        })
    };
    let objects = repo.join("objects");
    let loose = count(&objects.join("17"), &|name| {
        name.len() == 38 && name.bytes().all(|b| b.is_ascii_hexdigit())
    });
    let packs = count(&objects.join("pack"), &|name| name.ends_with(".pack"));
    loose > GC_AUTO.div_ceil(256) || packs > GC_AUTO_PACK_LIMIT
}

fn io_failure(what: &str, e: std::io::Error) -> GitFailure {
    GitFailure::new(ErrorKind::Other, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_locks_git_could_not_create_are_read_from_its_message() {
        let stderr = "error: cannot lock ref 'refs/heads/main': Unable to create \
                      '/c/x.git/./refs/heads/main.lock': File exists.\n\
                      Another git process seems to be running in this repository\n\
                      fatal: Unable to create '/c/x.git/packed-refs.lock': File exists.\n\
                      fatal: Unable to create '/c/x.git/not-a-lock': File exists.\n\
                      remote: fatal: Unable to create '/c/x.git/said-by-the-server.lock': File \
                      exists.\n";
        assert_eq!(
            locks_git_could_not_create(stderr).collect::<Vec<_>>(),
            [
                "/c/x.git/./refs/heads/main.lock",
                "/c/x.git/packed-refs.lock"
            ]
        );
    }

    /// What a real `git fetch` of `id` from `source` into a new repository says when it fails.
    fn fetch_failure(source: &Path, id: &str, protocol: &str) -> GitFailure {
        let dir = tempfile::tempdir().unwrap();
        crate::engine::test_git(dir.path(), &["init", "-q", "--bare"], None);
        let out = std::process::Command::new("git")
            .args(["-c", &format!("protocol.version={protocol}"), "fetch", "-q"])
            .arg(format!("file://{}", source.display()))
            .arg(format!("+{id}:refs/heads/x"))
            .current_dir(dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(!out.status.success());
        failure_from_stderr("fetch", &String::from_utf8_lossy(&out.stderr))
    }

    #[tokio::test]
    async fn a_fetch_moving_held_refs_checks_connectivity_against_those_refs_alone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        crate::engine::test_git(repo, &["init", "-q", "-b", "main"], None);
        crate::engine::test_git(repo, &["commit", "-q", "--allow-empty", "-m", "one"], None);
        crate::engine::test_git(repo, &["branch", "other"], None);
        crate::engine::test_git(repo, &["tag", "v1"], None);
        let main = crate::engine::test_git(repo, &["rev-parse", "HEAD"], None);
        let git = Git::new(
            std::time::Duration::from_secs(60),
            false,
            Vec::new(),
            repo.to_owned(),
        );
        // What git's connectivity check in a fetch marks as complete: `--exclude-hidden=fetch
        // --all`, through ferry's git adapter with the config of a fetch moving main.
        let main_ref = "refs/heads/main".to_owned();
        let config = checked_against([&main_ref]);
        let call = |config| Call {
            config,
            ..Call::default()
        };
        let args = ["rev-parse", "--exclude-hidden=fetch", "--all"];
        let seen = git.run(repo, &args, call(&config)).await.unwrap();
        assert_eq!(
            seen.stdout.trim(),
            main.trim(),
            "only main is taken as complete"
        );
        let everything = git.run(repo, &args, call(&[])).await.unwrap();
        assert_eq!(
            everything.stdout.lines().count(),
            3,
            "without it: main, other, v1"
        );
    }

    #[test]
    fn a_server_refusing_an_id_is_told_from_a_failing_source() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path();
        crate::engine::test_git(source, &["init", "-q"], None);
        crate::engine::test_git(
            source,
            &["commit", "-q", "--allow-empty", "-m", "one"],
            None,
        );
        let first = crate::engine::test_git(source, &["rev-parse", "HEAD"], None);
        crate::engine::test_git(
            source,
            &["commit", "-q", "--allow-empty", "-m", "two"],
            None,
        );
        // Protocol v0 serves only advertised tips; any protocol refuses an id it lacks.
        assert!(refused_an_id(&fetch_failure(source, first.trim(), "0")));
        assert!(refused_an_id(&fetch_failure(source, &"1".repeat(40), "2")));
        let gone = failure_from_stderr(
            "fetch",
            "fatal: '/nowhere' does not appear to be a git repository",
        );
        assert!(!refused_an_id(&gone));
    }

    #[test]
    fn words_of_damage_ignore_the_remotes_own_lines() {
        assert!(mentions_damage(
            "error: inflate: data stream error (incorrect data check)"
        ));
        assert!(mentions_damage("fatal: bad object 1234"));
        assert!(mentions_damage(
            "remote: error: inflate returned -3\nerror: remote unpack failed: unpack-objects abnormal exit"
        ));
        assert!(!mentions_damage(
            "remote: fatal: bad object 1234\nerror: failed to push some refs"
        ));
        assert!(!mentions_damage("fatal: Not a valid commit name 1234"));
        assert!(!mentions_damage(
            "send-pack: unexpected disconnect while reading sideband packet\nfatal: the remote end hung up unexpectedly"
        ));
        assert!(!mentions_damage(""));
    }

    #[test]
    fn gc_is_asked_only_past_git_s_own_auto_limits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path();
        let fanout = repo.join("objects/17");
        let packs = repo.join("objects/pack");
        fs::create_dir_all(&fanout).expect("fan-out dir");
        fs::create_dir_all(&packs).expect("pack dir");
        assert!(!may_need_gc(repo), "an empty repository");
        for i in 0..27 {
            fs::write(fanout.join(format!("{i:038x}")), "").expect("object");
        }
        fs::write(fanout.join("tmp_obj_123456"), "").expect("temporary file");
        assert!(
            !may_need_gc(repo),
            "27 loose objects in objects/17 are within 6,700"
        );
        fs::write(fanout.join(format!("{:038x}", 27)), "").expect("object");
        assert!(may_need_gc(repo), "28 are past it");
        fs::remove_dir_all(&fanout).expect("remove");
        for i in 0..50 {
            fs::write(packs.join(format!("pack-{i}.pack")), "").expect("pack");
            fs::write(packs.join(format!("pack-{i}.idx")), "").expect("index");
        }
        assert!(!may_need_gc(repo), "50 packs are within gc.autoPackLimit");
        fs::write(packs.join("pack-50.pack"), "").expect("pack");
        assert!(may_need_gc(repo), "51 are past it");
    }

    #[test]
    fn fetch_porcelain_lines_give_each_ref_s_flag_and_ids() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let zero = "0".repeat(40);
        let out = format!(
            "  {a} {b} refs/heads/main\n+ {b} {a} refs/heads/rewritten\n* {zero} {b} refs/tags/v1\n- {a} {zero} refs/heads/gone\n= {a} {a} refs/heads/same\nnot a line\n"
        );
        let parsed = parse_fetch_porcelain(&out);
        let (a, b) = (Oid::parse(&a), Oid::parse(&b));
        let flags: Vec<(char, Option<Oid>, Option<Oid>, &str)> = parsed
            .iter()
            .map(|r| (r.flag, r.old.clone(), r.new.clone(), r.name.as_str()))
            .collect();
        assert_eq!(
            flags,
            vec![
                (' ', a.clone(), b.clone(), "refs/heads/main"),
                ('+', b.clone(), a.clone(), "refs/heads/rewritten"),
                ('*', None, b.clone(), "refs/tags/v1"),
                ('-', a, None, "refs/heads/gone"),
            ]
        );
    }
}

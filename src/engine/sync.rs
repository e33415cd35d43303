//! The sync engine: one run of one mirror. It wires the adapters (cache, git, record) around
//! the pure planner:
//!
//! ```text
//! lock cache ─┬─ fetch source into cache ──┐   (large caches: list source, fetch changed refs)
//!             └─ list each destination ────┴─> per destination: ancestry answers -> plan
//!                 -> push (leases, porcelain) -> re-plan lease failures once
//!                 -> verify with a fresh listing -> outcomes -> save record
//! ```
//! A destination with a record is planned from it and not listed (a local one is read from its
//! files); a local source is read from its files, and only its changed refs are fetched.
//! Destinations are independent: each gets its own report, and one failing never stops the
//! others.

use crate::engine::cache::{lock_waiting, Cache, CachePaths, Strategy};
use crate::engine::git::{
    failure_from_stderr, secrets_of, summarize_stderr, Call, Git, GitFailure,
};
use crate::engine::held_push::{self, HeldPush};
use crate::engine::lfs::{self, store::ObjectStore, Carried, Lfs};
use crate::engine::plan::{self, Action, Note, Plan, PlanInput, RefPlan};
use crate::engine::record::{FileStore, Record, RecordKey, RecordStore, StoreError};
use crate::engine::ref_files;
use crate::engine::report::{
    DestinationReport, ErrorReport, MirrorReport, Outcome, RefReport, SourceReport,
};
use crate::model::kind::{classify_ref_rejection, ErrorKind};
use crate::model::mirror::{short_hash, Mirror, Settings, CREATING_SUFFIX};
use crate::model::mirror::{Divergence, LfsMode, Prune};
use crate::model::refs::{is_plain_ref_name, refs_digest, Oid, RefMap, RefSelection, SortedLookup};
use crate::model::remote::{Remote, Transport};
use futures::future::{join_all, maybe_done, poll_fn, select, BoxFuture, Either, MaybeDone};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Context;
use std::time::Instant;

/// Refs per `git push` when not atomic: keeps argv well under the kernel's limit on repos with
/// tens of thousands of refs.
const PUSH_BATCH: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fetch, plan, push, verify.
    Sync,
    /// Fetch into the cache and plan; change no destination.
    Plan,
}

/// Where a run keeps its sync records, and what it may take a destination to hold from
/// ferry's last sync where its record has no entry for a ref.
#[derive(Clone, Copy)]
pub struct Records<'a> {
    pub store: &'a dyn RecordStore,
    /// Ref -> the value to expect when the record says nothing about the ref: the value the
    /// source had before the change an event reports (a CodeCommit event's old commit id).
    pub assumed: &'a RefMap,
}

/// Runs one mirror with its records beside the cache ([`FileStore`]).
/// `focus` and `claimed` as in [`run_mirror_with`] (none: the whole selection).
pub async fn run_mirror(
    mirror: &Mirror,
    settings: &Settings,
    mode: Mode,
    focus: &[String],
    claimed: &RefMap,
) -> MirrorReport {
    let store = FileStore::new(&settings.cache_dir);
    let records = Records {
        store: &store,
        assumed: &RefMap::new(),
    };
    run_mirror_with(mirror, settings, mode, records, focus, claimed, None).await
}

/// Runs one mirror and reports everything that happened. Never panics on bad input or network
/// failures: they end up in the report.
///
/// `focus`: the full names of the refs an event said changed (empty: none). A sync that is
/// not verifying, whose focus names only plain ref names its selection selects, fetches,
/// plans and pushes only those refs and leaves every other ref and record entry alone; when
/// the focused fetch fails (a named ref is gone from the source, or anything else), the run
/// takes the whole selection instead. `claimed`: what the event says the focus's refs point at
/// now; when the cache holds exactly that already, the focused run does not fetch at all, and
/// when those ids are ahead of the cache it fetches them by id (see [`Cache::reach_claimed`]).
/// `later`: the pushes that come in while a focused run fetches (see [`LaterPushes`]; `None`:
/// the run takes none).
pub async fn run_mirror_with(
    mirror: &Mirror,
    settings: &Settings,
    mode: Mode,
    records: Records<'_>,
    focus: &[String],
    claimed: &RefMap,
    later: Option<&dyn LaterPushes>,
) -> MirrorReport {
    let started = Instant::now();
    let git = git_for(mirror, settings);
    let mut focus = narrowed(mirror, mode, focus).map(|refs| Focus {
        refs,
        claimed: Cow::Borrowed(claimed),
        later,
    });
    let objects = ObjectStore::new(&settings.cache_dir);

    let (source, destinations) =
        match Cache::open(&settings.cache_dir, &mirror.source, &git, settings.timeout).await {
            Err(e) => source_failed(mirror, e),
            Ok(cache) => {
                let mut reset = false;
                loop {
                    let attempted = attempt(
                        mirror,
                        &cache,
                        &git,
                        mode,
                        records,
                        focus.as_ref(),
                        &objects,
                    )
                    .await;
                    match attempted {
                        Attempted::MovedOn(ids) => {
                            if let Some(focus) = &mut focus {
                                focus.claimed = Cow::Owned(ids);
                                // Once: a steady stream of pushes never keeps a run from
                                // pushing.
                                focus.later = None;
                            }
                        }
                        Attempted::Done(done) if reset || !cache.is_damaged() => break done,
                        Attempted::Done(_) => {
                            // git could not read the cache's own objects (a corrupt pack):
                            // start from an empty cache and run once more; destinations
                            // already done are no-ops.
                            if let Err(e) = cache.reset(&git).await {
                                break source_failed(mirror, e);
                            }
                            reset = true;
                        }
                    }
                }
            }
        };
    MirrorReport {
        name: mirror.name.clone(),
        ok: source.ok && destinations.iter().all(|d| d.ok),
        duration_ms: started.elapsed().as_millis() as u64,
        source,
        destinations,
    }
}

/// A git runner that knows every secret of the mirror (to scrub them from git's output).
fn git_for(mirror: &Mirror, settings: &Settings) -> Git {
    Git::new(
        settings.timeout,
        settings.progress,
        secrets_of(std::iter::once(&mirror.source).chain(&mirror.destinations)),
        settings.cache_dir.clone(),
    )
}

/// For polling: whether the source's selected refs differ from what this mirror last synced
/// from (`last_synced`, the [`refs_digest`] of its last run's source). The cache is shared by
/// every mirror and command with that source, so it says nothing about whether this mirror's
/// destinations got a change; it is compared only when the mirror has no run to go by. One
/// listing of the source, and then a local read without taking the cache's lock (a sync that
/// holds it only moves the cache towards the source; the worst case is one extra sync).
pub async fn source_changed(
    mirror: &Mirror,
    settings: &Settings,
    last_synced: Option<&str>,
) -> Result<bool, GitFailure> {
    let git = git_for(mirror, settings);
    let listing = ls_remote(&mirror.source, &mirror.selection, &git).await?;
    if let Some(last) = last_synced {
        return Ok(refs_digest(&listing) != last);
    }
    let repo = CachePaths::new(&settings.cache_dir, &mirror.source).repo;
    if !repo.is_dir() {
        return Ok(true);
    }
    let out = git
        .run(
            &repo,
            &["for-each-ref", "--format=%(objectname) %(refname)"],
            Call::default(),
        )
        .await?;
    Ok(!out.success || mirror.selection.parse(&out.stdout) != listing)
}

/// The refs a run may be narrowed to: `focus` when it names refs, the run is a sync that does
/// not verify, and every name is a plain ref name (no refspec or pattern syntax) its selection
/// selects.
fn narrowed(mirror: &Mirror, mode: Mode, focus: &[String]) -> Option<BTreeSet<String>> {
    let applies = mode == Mode::Sync
        && !mirror.verify
        && !focus.is_empty()
        && focus
            .iter()
            .all(|name| is_plain_ref_name(name) && mirror.selection.selects(name));
    applies.then(|| focus.iter().cloned().collect())
}

/// The refs an event named (when the run is narrowed to them) and what it says they point at
/// now on the source.
struct Focus<'a> {
    refs: BTreeSet<String>,
    claimed: Cow<'a, RefMap>,
    later: Option<&'a dyn LaterPushes>,
}

/// Pushes that came in for a mirror after its run was claimed (the service's queue). A burst of
/// pushes to one branch comes as a burst of events: the first starts a run, the others come in
/// while it fetches. A run that took them in then fetches and pushes the last one's commit once,
/// instead of pushing the first one's and leaving the rest to a follow-up run.
pub trait LaterPushes: Send + Sync {
    /// Asked once a focused run has fetched `claimed`, before it pushes anything: when the
    /// pushes that came in since only move the run's `focus` (sorted) on from `claimed`, by
    /// unbroken chains of old and new ids, takes them into this run and returns the ids they
    /// end at. `None`: the run goes on with what it has (a failure to ask is `None` too). The
    /// run takes only ids that name exactly its focus ([`names_exactly`]); others are ignored,
    /// so an implementation counts the pushes as this run's only then.
    fn take<'a>(
        &'a self,
        focus: &'a [String],
        claimed: &'a RefMap,
    ) -> BoxFuture<'a, Option<RefMap>>;
}

/// How one pass over the mirror ended.
enum Attempted {
    /// It ran: what happened at the source and at each destination.
    Done((SourceReport, Vec<DestinationReport>)),
    /// It fetched, then took later pushes of its refs in, which end at these ids; it pushed
    /// nothing, and the run goes on with these ids.
    MovedOn(RefMap),
}

/// The source as one pass sees it: its refs (within the focus, when focused) and whether the
/// fetch changed anything.
struct SourceRefs {
    refs: RefMap,
    fetched: bool,
    /// Whether only the focus was fetched (then `refs` holds only the focus).
    focused: bool,
    /// The source's listing when `refs` are exactly it (its digest may be made already).
    listed: Option<Arc<Listed>>,
}

/// The source's listing, taken before its fetch, as the destinations see it. A listing git
/// printed is kept as its text: a no-op needs only its digest, and 10k refs parsed into a
/// table cost milliseconds of the run's critical path.
struct Listed {
    /// `ls-remote`'s output (empty when `refs` was read from a local source's files).
    text: String,
    selection: RefSelection,
    /// The selected refs, parsed from `text` by whoever needs them first.
    refs: std::sync::OnceLock<RefMap>,
    /// Their [`refs_digest`], made once by whoever needs it first.
    digest: std::sync::OnceLock<String>,
}

impl Listed {
    fn of_text(text: String, selection: &RefSelection) -> Listed {
        Listed {
            text,
            selection: selection.clone(),
            refs: std::sync::OnceLock::new(),
            digest: std::sync::OnceLock::new(),
        }
    }

    fn of_refs(refs: RefMap, selection: &RefSelection) -> Listed {
        Listed {
            refs: refs.into(),
            ..Listed::of_text(String::new(), selection)
        }
    }

    fn refs(&self) -> &RefMap {
        self.refs.get_or_init(|| self.selection.parse(&self.text))
    }

    fn into_refs(self) -> RefMap {
        match self.refs.into_inner() {
            Some(refs) => refs,
            None => self.selection.parse(&self.text),
        }
    }

    fn digest(&self) -> &str {
        self.digest.get_or_init(|| match self.refs.get() {
            Some(refs) => refs_digest(refs),
            None => self
                .selection
                .listing_digest(&self.text)
                .unwrap_or_else(|| refs_digest(self.refs())),
        })
    }
}

/// The settled stamp (see [`Record::settle`]) of a record whose refs are exactly the source's
/// refs of `digest` (a [`refs_digest`]) under the mirror's LFS policy: a stamp made with LFS
/// off says nothing about LFS objects, so turning LFS on makes every stamp stale.
fn settled_stamp(mirror: &Mirror, digest: &str) -> String {
    short_hash(format!("{digest}\nlfs {:?}", mirror.lfs.mode))
}

/// One pass: bring the cache up to the source (only the focus's refs when there is one and
/// their fetch works; else the selection, see [`Strategy`]) while reading every destination's
/// record and listing the destinations that need it (see [`prepare_destination`]); then sync
/// every destination concurrently, with the cache's housekeeping alongside.
async fn attempt(
    mirror: &Mirror,
    cache: &Cache,
    git: &Git,
    mode: Mode,
    records: Records<'_>,
    focus: Option<&Focus<'_>>,
    objects: &ObjectStore,
) -> Attempted {
    let mut pass = Pass {
        mirror,
        cache,
        git,
        mode,
        records,
        focus: None,
        stamp: None,
        lfs: Lfs {
            policy: mirror.lfs,
            source: &mirror.source,
            git,
            repo: cache.dir(),
            store: objects,
            timeout: git.timeout(),
        },
    };
    let (listed_tx, listed) = tokio::sync::watch::channel(None);
    let prepared = join_all(
        mirror
            .destinations
            .iter()
            .map(|d| prepare_destination(pass, d, focus, listed.clone())),
    );
    drop(listed);
    let fetch = async {
        // Owned by the body (dropped when it returns, not when the future is), so that
        // destinations waiting for a listing stop waiting once the source is in the cache.
        let listed_tx = listed_tx;
        if let Some(Focus {
            refs: focus,
            claimed,
            ..
        }) = focus
        {
            if let Some((refs, fetched)) = cache
                .reach_claimed(&mirror.source, focus, claimed, git)
                .await
            {
                return Ok(SourceRefs {
                    refs,
                    fetched,
                    focused: true,
                    listed: None,
                });
            }
            match cache.fetch_refs(&mirror.source, focus, git).await {
                Ok((refs, fetched)) => {
                    return Ok(SourceRefs {
                        refs,
                        fetched,
                        focused: true,
                        listed: None,
                    })
                }
                Err(e) => tracing::info!(
                    mirror = %mirror.name,
                    error = %e.message,
                    "fetching only the refs the event named failed; syncing the whole selection"
                ),
            }
        }
        fetch_selection(mirror, cache, git, listed_tx).await
    };
    let (source, prepared) = beside_the_fetch(fetch, prepared).await;
    let mut source = match source {
        Ok(source) => source,
        Err(e) => return Attempted::Done(source_failed(mirror, e)),
    };
    if source.focused {
        if let Some(moved_on) = take_later_pushes(focus).await {
            // The pushes held for the claimed ids stop at their gates as `prepared` goes.
            return Attempted::MovedOn(moved_on);
        }
        pass.focus = focus.map(|f| &f.refs);
    }
    // Taken, so that the listing (a second table of the source's refs) is freed here.
    let listed = source.listed.take();
    let source_refs = &source.refs;
    // A focused run did not read the whole source: polling keeps the last full digest, and
    // no record settles.
    let digest = (!source.focused).then(|| match listed {
        Some(listed) => listed.digest().to_owned(),
        None => refs_digest(source_refs),
    });
    let stamp = digest
        .as_deref()
        .filter(|_| mode == Mode::Sync)
        .map(|digest| settled_stamp(mirror, digest));
    let pass = Pass {
        stamp: stamp.as_deref(),
        ..pass
    };
    let per_dest = mirror
        .destinations
        .iter()
        .zip(prepared)
        .map(|(dest, prepared)| sync_destination(pass, source_refs, dest, prepared));
    let (reports, ()) = tokio::join!(join_all(per_dest), async {
        if source.fetched {
            cache.housekeeping(git).await;
        }
    });
    let report = SourceReport {
        url: mirror.source.display().to_owned(),
        ok: true,
        refs: source_refs.len(),
        error: None,
        digest,
    };
    free_aside(source);
    Attempted::Done((report, reports))
}

/// The ids later pushes move a focused run's refs on to (see [`LaterPushes`]), when they
/// name exactly its focus.
async fn take_later_pushes(focus: Option<&Focus<'_>>) -> Option<RefMap> {
    let focus = focus?;
    let later = focus.later?;
    let names: Vec<String> = focus.refs.iter().cloned().collect();
    let moved_on = later.take(&names, &focus.claimed).await?;
    names_exactly(&moved_on, &names).then_some(moved_on)
}

/// Whether `ids` name exactly the refs of `focus` (sorted, distinct): the only later ids a run
/// takes (see [`LaterPushes::take`]).
pub fn names_exactly(ids: &RefMap, focus: &[String]) -> bool {
    ids.len() == focus.len() && focus.iter().all(|name| ids.contains_key(name.as_str()))
}

/// Brings the cache up to the source's whole selection (see [`Strategy`]); the source's
/// listing, taken first or read from the fetch's trace, is sent to `listed` as soon as it is
/// known, before the fetch ends.
async fn fetch_selection(
    mirror: &Mirror,
    cache: &Cache,
    git: &Git,
    listed: tokio::sync::watch::Sender<Option<Arc<Listed>>>,
) -> Result<SourceRefs, GitFailure> {
    let selection = &mirror.selection;
    // A local source is listed first whatever the cache's size: its listing is a read of its
    // files (see `list_refs`), so a no-op runs no git for it and a change fetches only the
    // changed refs. A remote source is fetched straight away unless the cache has many refs
    // (see `Cache::strategy`): the fetch lists the source itself, and that listing, read from
    // its trace, decides a no-op and starts the destinations' pushes from their records (see
    // `hold_a_push`) while the pack comes. A cache with many refs lists first: a no-op then
    // costs one listing, and a change is fetched by id, with the pushes started beside it.
    let strategy = match mirror.source.local_path() {
        Some(_) => Strategy::ListFirst,
        None => cache.strategy(),
    };
    match strategy {
        Strategy::FetchFirst => {
            // The fetch's own listing, read from its trace, stands in for a listing taken
            // before it: the destinations' pushes start from it while the fetch goes on, and
            // when it matches the cache the run is a no-op and stops the fetch there.
            let (listing_tx, listing_rx) = tokio::sync::oneshot::channel();
            let mut update = pin!(cache.update(&mirror.source, selection, git, Some(listing_tx)));
            // The refs read beside the fetch stand when the fetch changed nothing.
            let (before, listing) = tokio::join!(
                cache.refs(selection, git),
                select(listing_rx, update.as_mut()),
            );
            let (listing, updated) = match listing {
                Either::Left((Ok(text), _)) => {
                    (Some(Arc::new(Listed::of_text(text, selection))), None)
                }
                // No listing in the trace: the fetch says what happened.
                Either::Left((Err(_), _)) => (None, None),
                Either::Right((updated, _)) => (None, Some(updated)),
            };
            if let Some(listing) = &listing {
                let _ = listed.send(Some(listing.clone()));
            }
            drop(listed);
            if let (Some(listing), Ok(before)) = (&listing, &before) {
                if listing.digest() == refs_digest(before) {
                    // Dropping the fetch stops its git, which has nothing to fetch.
                    return Ok(SourceRefs {
                        refs: before.clone(),
                        fetched: false,
                        focused: false,
                        listed: Some(listing.clone()),
                    });
                }
            }
            let updated = match updated {
                Some(updated) => updated,
                None => update.await,
            };
            let (refs, fetched) = match (updated?, before) {
                (0, Ok(before)) => (before, false),
                (n, _) => (cache.refs(selection, git).await?, n > 0),
            };
            let listed = listing.filter(|listing| *listing.refs() == refs);
            Ok(SourceRefs {
                refs,
                fetched,
                focused: false,
                listed,
            })
        }
        Strategy::ListFirst => {
            // The listing first: a remote one's git starts before the cache's refs are read
            // (a read of its files, on this thread).
            // A remote listing comes as text, compared by digest (see `Listed`): the cache's
            // is made while git lists.
            let remote = mirror.source.local_path().is_none();
            let (listing, (cached, cached_digest)) =
                tokio::join!(list_source(&mirror.source, selection, git, false), async {
                    // An unreadable cache counts as empty: the full fetch that follows
                    // repairs it.
                    let cached = cache.refs(selection, git).await.unwrap_or_default();
                    let digest = remote.then(|| refs_digest(&cached));
                    (cached, digest)
                });
            let listing = Arc::new(listing?);
            let _ = listed.send(Some(listing.clone()));
            drop(listed);
            let unchanged = match cached_digest {
                Some(digest) => listing.digest() == digest,
                None => *listing.refs() == cached,
            };
            if unchanged {
                return Ok(SourceRefs {
                    refs: cached,
                    fetched: false,
                    focused: false,
                    listed: Some(listing),
                });
            }
            let refs = cache
                .catch_up(&mirror.source, selection, cached, listing.refs(), git)
                .await?;
            // The cache is at the listing unless the source moved meanwhile: then its digest
            // is made afresh.
            let listed = (refs == *listing.refs()).then_some(listing);
            Ok(SourceRefs {
                refs,
                fetched: true,
                focused: false,
                listed,
            })
        }
    }
}

fn source_failed(mirror: &Mirror, e: GitFailure) -> (SourceReport, Vec<DestinationReport>) {
    let kind = e.kind;
    let source = SourceReport {
        url: mirror.source.display().to_owned(),
        ok: false,
        refs: 0,
        error: Some(e.into()),
        digest: None,
    };
    let dests = mirror
        .destinations
        .iter()
        .map(|d| {
            DestinationReport::failed(
                d.display(),
                ErrorReport::new(
                    kind,
                    "not synced: the source could not be read (see the source's error)",
                ),
            )
        })
        .collect();
    (source, dests)
}

/// Lists a destination's refs, creating a missing local bare repository when asked (not in
/// plan mode, which changes nothing).
async fn list_destination(
    mirror: &Mirror,
    dest: &Remote,
    mode: Mode,
    git: &Git,
) -> Result<RefMap, GitFailure> {
    let (selection, create) = (&mirror.selection, mirror.create);
    if let Some(path) = dest.local_path() {
        if !path.exists() {
            if !create {
                return Err(GitFailure::new(
                    ErrorKind::NotFound,
                    format!("the destination {} does not exist; pass --create (or create = true) to create it as a bare repository", dest.display()),
                ));
            }
            if mode == Mode::Plan {
                return Ok(RefMap::new());
            }
            create_local_destination(&mirror.source, dest, &path, git).await?;
        }
    }
    ls_remote(dest, selection, git).await
}

/// Creates a local destination as a bare repository, whole or not at all. git makes it
/// beside its path (`.<name>.ferry-new`), and it is renamed into place once complete: a run
/// killed meanwhile (`kill -9`, a Lambda timeout) leaves no half-made repository where the
/// destination belongs, which every later run would fail on. The parent directory is locked
/// throughout, so that runs creating it at once take turns (the later one finds it made);
/// under the lock, what a killed run left beside it is removed.
async fn create_local_destination(
    source: &Remote,
    dest: &Remote,
    path: &Path,
    git: &Git,
) -> Result<(), GitFailure> {
    let failed = |what: &str, e: std::io::Error| {
        GitFailure::new(
            ErrorKind::Other,
            format!(
                "cannot create the destination {}: {what}: {e}",
                dest.display()
            ),
        )
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(GitFailure::new(
            ErrorKind::Other,
            format!(
                "cannot create the destination {}: its path names no directory to create; give the path of the repository to create",
                dest.display()
            ),
        ));
    };
    // The new repository's HEAD names the source's default branch, so that a clone of it
    // checks that branch out (git's own default may not exist in it). Asked before the lock:
    // creations beside this one wait for the lock, not for this listing.
    let initial = source_default_branch(source, git)
        .await
        .map(|b| format!("--initial-branch={b}"));
    std::fs::create_dir_all(parent)
        .map_err(|e| failed(&format!("creating {}", parent.display()), e))?;
    // A lock on the directory itself leaves no file behind.
    let _turn = lock_waiting(
        || std::fs::File::open(parent),
        &format!("the directory {}", parent.display()),
        git.timeout(),
    )
    .await?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Another run created it while this one waited for its turn.
        Ok(_) if path.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(GitFailure::new(
                ErrorKind::Other,
                format!(
                    "cannot create the destination {}: something that is not a directory is at its path (a symbolic link to a missing directory?); remove it, or fix the link",
                    dest.display()
                ),
            ))
        }
        Err(e) => return Err(failed(&format!("looking at {}", path.display()), e)),
    }
    let mut making_name = std::ffi::OsString::from(".");
    making_name.push(name);
    making_name.push(CREATING_SUFFIX);
    let making = parent.join(making_name);
    remove_made(&making).map_err(|e| {
        failed(
            &format!(
                "removing {}, left by a run killed while creating it",
                making.display()
            ),
            e,
        )
    })?;
    let making_str = making.display().to_string();
    let mut args = vec!["init", "--bare", "--quiet"];
    args.extend(initial.as_deref());
    args.push(&making_str);
    let made = git
        .run(parent, &args, Call::default())
        .await
        .and_then(|out| out.check(&format!("creating the destination {}", dest.display())));
    let placed = made.and_then(|_| {
        std::fs::rename(&making, path)
            .map_err(|e| failed(&format!("renaming {} into place", making.display()), e))
    });
    if placed.is_err() {
        let _ = remove_made(&making);
    }
    placed
}

/// Removes a repository being made by [`create_local_destination`], if there is one.
fn remove_made(making: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(making) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(making),
        Ok(_) => std::fs::remove_file(making),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The branch the source's HEAD names (`main` for `ref: refs/heads/main`), if it says. Only
/// asked when a destination is created: one listing of HEAD alone.
async fn source_default_branch(source: &Remote, git: &Git) -> Option<String> {
    let out = git
        .run(
            &std::env::temp_dir(),
            &["ls-remote", "--symref", "--", source.git_url(), "HEAD"],
            Call {
                remote: Some(source),
                transfer: false,
                ..Call::default()
            },
        )
        .await
        .ok()?
        .check("reading the source's HEAD")
        .ok()?;
    default_branch(&out.stdout)
}

/// The branch in `ls-remote --symref ... HEAD` output.
fn default_branch(listing: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let (target, name) = line.strip_prefix("ref: ")?.split_once('\t')?;
        let branch = target.strip_prefix("refs/heads/")?;
        (name == "HEAD" && !branch.is_empty()).then(|| branch.to_owned())
    })
}

/// The remote's refs within the selection. When the selection is branches and/or tags only,
/// git is told so and the server lists only those (GitHub's thousands of refs/pull/* stay
/// on the server).
async fn ls_remote(
    remote: &Remote,
    selection: &RefSelection,
    git: &Git,
) -> Result<RefMap, GitFailure> {
    list_refs(remote, selection, git, false).await
}

/// Lists right after a push, to see what the destination really holds. Protocol v0, whose
/// first response is the listing, saves a round trip over v2 (capabilities, then ls-refs);
/// this listing is on the critical path, the ones before it run beside the fetch.
async fn verify_listing(
    remote: &Remote,
    selection: &RefSelection,
    git: &Git,
) -> Result<RefMap, GitFailure> {
    list_refs(remote, selection, git, true).await
}

async fn list_refs(
    remote: &Remote,
    selection: &RefSelection,
    git: &Git,
    protocol_v0: bool,
) -> Result<RefMap, GitFailure> {
    Ok(list_source(remote, selection, git, protocol_v0)
        .await?
        .into_refs())
}

/// The remote's refs within the selection as a [`Listed`]: a local repository's read from its
/// files, a remote one's listing kept as git printed it.
async fn list_source(
    remote: &Remote,
    selection: &RefSelection,
    git: &Git,
    protocol_v0: bool,
) -> Result<Listed, GitFailure> {
    if let Some(mut refs) = local_listing(remote) {
        refs.retain(|name, _| selection.selects(name));
        return Ok(Listed::of_refs(refs, selection));
    }
    let text = ls_remote_text(remote, selection, git, protocol_v0).await?;
    Ok(Listed::of_text(text, selection))
}

/// `git ls-remote`'s output for the remote's refs, narrowed to branches and/or tags when the
/// selection is (GitHub's thousands of refs/pull/* then stay on the server).
async fn ls_remote_text(
    remote: &Remote,
    selection: &RefSelection,
    git: &Git,
    protocol_v0: bool,
) -> Result<String, GitFailure> {
    let cwd = std::env::temp_dir();
    let mut args = vec![];
    if protocol_v0 {
        args.extend(["-c", "protocol.version=0"]);
    }
    args.extend(["ls-remote", "--refs"]);
    let patterns: Vec<&str> = selection.include.iter().map(|p| p.as_str()).collect();
    if patterns
        .iter()
        .all(|p| p.starts_with("refs/heads/") || p.starts_with("refs/tags/"))
    {
        if patterns.iter().any(|p| p.starts_with("refs/heads/")) {
            args.push("--heads");
        }
        if patterns.iter().any(|p| p.starts_with("refs/tags/")) {
            args.push("--tags");
        }
    }
    args.push("--");
    args.push(remote.git_url());
    let out = git
        .run(
            &cwd,
            &args,
            Call {
                remote: Some(remote),
                transfer: false,
                ..Call::default()
            },
        )
        .await?
        .check(&format!("listing {}", remote.display()))?;
    Ok(out.stdout)
}

/// A local repository's refs read from its files, as `git ls-remote` of its path would list
/// them (see [`ref_files::read_repository`]); `None` for a remote, or when only git can say.
/// Read on the calling thread, as the cache's refs are: on a blocking thread the tables would
/// be built in another malloc arena, which cost 3 MiB of peak memory with 10k refs for no
/// measurable gain.
fn local_listing(remote: &Remote) -> Option<RefMap> {
    let path = remote.local_path()?;
    match ref_files::read_repository(&path) {
        Ok(refs) => refs,
        Err(e) => {
            tracing::debug!(repo = %remote.display(), error = %e, "reading refs from files failed; asking git");
            None
        }
    }
}

/// What every destination of one pass shares.
#[derive(Clone, Copy)]
struct Pass<'a> {
    mirror: &'a Mirror,
    cache: &'a Cache,
    git: &'a Git,
    mode: Mode,
    records: Records<'a>,
    /// `Some`: the run fetched only these refs; it plans, pushes and records only them.
    focus: Option<&'a BTreeSet<String>>,
    /// `Some`: the pass read the source's whole selection and syncs; a record settled at this
    /// stamp has nothing to do, and a record that ends the pass exactly at the source's refs
    /// settles at it (see [`Record::settle`]).
    stamp: Option<&'a str>,
    lfs: Lfs<'a>,
}

impl Pass<'_> {
    /// The refs of `refs` this pass is about: all of them (borrowed: a ref table can hold
    /// thousands of names), or those in the focus.
    fn scope<'r>(&self, refs: &'r RefMap) -> Cow<'r, RefMap> {
        match self.focus {
            None => Cow::Borrowed(refs),
            Some(focus) => Cow::Owned(
                refs.iter()
                    .filter(|(name, _)| focus.contains(*name))
                    .map(|(name, oid)| (name.clone(), oid.clone()))
                    .collect(),
            ),
        }
    }

    /// [`Pass::scope`] of a table the caller owns.
    fn scope_owned(&self, refs: RefMap) -> RefMap {
        match self.focus {
            None => refs,
            Some(_) => self.scope(&refs).into_owned(),
        }
    }
}

/// A destination's listing, started beside the source's fetch.
type Listing<'a> = Pin<Box<MaybeDone<BoxFuture<'a, Result<RefMap, GitFailure>>>>>;

/// A destination's record, and how the run learns what the destination holds.
struct Prepared<'a> {
    /// `None`: not read, as the record's settled stamp matched the source's listing (see
    /// [`prepare_destination`]).
    record: Option<Result<Record, StoreError>>,
    /// The record's settled stamp, read first when the record may stand in for the
    /// destination.
    settled: Option<String>,
    /// Where the destination's refs come from (see [`prepare_destination`]).
    trust: Trust,
    /// The listing, when one was started.
    listing: Option<Listing<'a>>,
    /// The push started beside the fetch, when the run can tell what it will be (see
    /// [`hold_a_push`]).
    held: Option<HeldPush>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Plan from the listing.
    Listing,
    /// Plan from the record; nothing was listed (a focused run).
    Record,
    /// Plan from the record when that plan pushes something, or when the destination is
    /// remote (nothing is listed: a no-op makes no round trip to it); else (a local
    /// destination with nothing to push) from the listing, a read of its files started beside
    /// the fetch, which reports what changed on it behind ferry's back.
    RecordWhenPushing,
}

impl Prepared<'_> {
    /// Lets a started listing make progress (it keeps its result once done).
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(listing) = &mut self.listing {
            if let MaybeDone::Future(_) = listing.as_mut().get_mut() {
                let _ = listing.as_mut().poll(cx);
            }
        }
    }
}

/// A started listing's result, waiting for it to finish; `None` when none was started.
async fn listed(listing: Option<Listing<'_>>) -> Option<Result<RefMap, GitFailure>> {
    let mut listing = listing?;
    listing.as_mut().await;
    listing.as_mut().take_output()
}

/// Runs `fetch` while the destinations are prepared, and keeps their listings going until the
/// fetch is done (each one's result is kept for whoever needs it).
async fn beside_the_fetch<'a, F: Future>(
    fetch: F,
    prepared: impl Future<Output = Vec<Prepared<'a>>>,
) -> (F::Output, Vec<Prepared<'a>>) {
    let mut fetch = pin!(fetch);
    let prepared = pin!(prepared);
    let (fetched, mut prepared) = match select(fetch.as_mut(), prepared).await {
        // The fetch was done before the records were read: a listing starts only when the
        // destination's run needs it.
        Either::Left((fetched, prepared)) => (Some(fetched), prepared.await),
        Either::Right((prepared, _)) => (None, prepared),
    };
    let fetched = match fetched {
        Some(fetched) => fetched,
        None => {
            poll_fn(|cx| {
                for p in &mut prepared {
                    p.drive(cx);
                }
                fetch.as_mut().poll(cx)
            })
            .await
        }
    };
    (fetched, prepared)
}

/// What the source's listing said, for the destinations' held pushes (see [`hold_a_push`]):
/// `None` until the source is listed (first, or by the fetch, read from its trace); the sender
/// is dropped without a listing when the fetch's trace gave none.
type SourceListing = tokio::sync::watch::Receiver<Option<Arc<Listed>>>;

/// Whether a sync may plan from destinations' records instead of listing them: not when it
/// verifies or only plans, nor when a policy needs the whole destination (`divergence =
/// abort` looks at every ref, `prune = all` deletes refs ferry never recorded).
fn records_can_stand_in(mirror: &Mirror, mode: Mode) -> bool {
    mirror.policy.divergence != Divergence::Abort
        && mirror.policy.prune != Prune::All
        && !mirror.verify
        && mode == Mode::Sync
}

/// Reads the destination's record and decides how the run learns what the destination holds.
///
/// The record stands in for a listing where that is safe: every push carries a lease on the
/// recorded value, so a destination that changed behind ferry's back fails the lease, and
/// then it is listed and re-planned. A focused run (the refs an event named) plans from a
/// non-empty record and lists nothing. Any other sync with a non-empty record plans from the
/// record too, and lists nothing remote; a local destination is read from its files beside
/// the fetch, and that listing decides when the record's plan pushes nothing (see
/// [`Trust::RecordWhenPushing`]). The listing decides when the policies need the whole
/// destination (`divergence = abort` looks at every ref, `prune = all` deletes refs ferry never
/// recorded), when the run verifies (`verify`, reconcile runs), plans (`ferry plan`), has no
/// record yet, or may have to create a local destination.
///
/// A focused run whose event says what its refs point at now also starts the push it expects
/// to make (see [`hold_a_push`]); so does a run planning a destination from its record, once
/// `source_listing` brings the source's listing (none comes when a fetch's trace gives
/// none).
///
/// Where the record may stand in, its settled stamp (see [`Record::settle`]) decides whether
/// there is anything to do. A local source has given its listing already: the stamp is read
/// alone first, and when it names that listing the record is not read at all. A remote
/// source's listing comes later: where the store reads a stamp alone cheaply (files), a
/// stamp is read first and compared with the listing when it comes, and the record is read
/// only when they differ; elsewhere (S3) the record, which carries its stamp, is read
/// meanwhile, and `sync_destination` compares the stamp.
async fn prepare_destination<'a>(
    pass: Pass<'a>,
    dest: &'a Remote,
    focus: Option<&Focus<'_>>,
    mut source_listing: SourceListing,
) -> Prepared<'a> {
    let focused = focus.is_some();
    let mirror = pass.mirror;
    let key = RecordKey {
        source: &mirror.source,
        destination: dest,
        selection: &mirror.selection,
    };
    let start_listing = || -> Listing<'a> {
        Box::pin(maybe_done(Box::pin(list_destination(
            mirror, dest, pass.mode, pass.git,
        ))))
    };
    let missing_locally = dest.local_path().is_some_and(|p| !p.exists());
    let policy_allows = records_can_stand_in(mirror, pass.mode);
    // The stamp matters only where the record may stand in for the whole destination.
    let may_settle = !focused && policy_allows && !missing_locally;
    let matches = |stamp: Option<&str>, listed: &Listed| {
        stamp.is_some_and(|stamp| settled_stamp(mirror, listed.digest()) == stamp)
    };
    // A local source's listing is here already (a read of its files, done before this runs):
    // the stamp is read alone first, and when the record settled at that listing, the record
    // is not read: the run has nothing to do, unless a local destination's files say
    // otherwise (see `sync_destination`). A remote source's listing comes later: with a store
    // that reads a stamp alone cheaply (files), the stamp is read first and the record only
    // when the listing does not match it; otherwise (S3) the record, which holds its stamp,
    // is read meanwhile (one read of the store, not two).
    let listed_now = source_listing.borrow().clone();
    let store = pass.records.store;
    let stamp_first = listed_now.is_some() || store.settled_alone_is_cheap();
    if may_settle && stamp_first {
        let stamp = store.settled(key).await.unwrap_or_else(|e| {
            tracing::debug!(destination = dest.display(), error = %e, "cannot read the sync record's settled stamp; reading the record");
            None
        });
        // A remote source's listing is awaited only when there is a stamp to compare it
        // with: a record that never settled is read meanwhile, as a change needs it.
        let listed = match (listed_now, &stamp) {
            (Some(listed), _) => Some(listed),
            (None, Some(_)) => source_listing
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|listed| listed.clone()),
            (None, None) => None,
        };
        if listed.is_some_and(|listed| matches(stamp.as_deref(), &listed)) {
            return Prepared {
                record: None,
                settled: stamp,
                trust: Trust::RecordWhenPushing,
                listing: dest.local_path().map(|_| start_listing()),
                held: None,
            };
        }
    }
    let record = Record::load(pass.records.store, key).await;
    let settled = record
        .as_ref()
        .ok()
        .and_then(Record::settled_as_loaded)
        .filter(|_| may_settle)
        .map(str::to_owned);
    let recorded = !missing_locally && record.as_ref().is_ok_and(|r| !r.refs.is_empty());
    let trust = if focused && recorded {
        Trust::Record
    } else if recorded && policy_allows {
        Trust::RecordWhenPushing
    } else {
        Trust::Listing
    };
    let listed = match trust {
        Trust::Listing => true,
        Trust::RecordWhenPushing => dest.local_path().is_some(),
        Trust::Record => false,
    };
    let listing = listed.then(start_listing);
    let held = match (trust, focus, &record) {
        (Trust::Record, Some(focus), Ok(record)) => {
            let moved = focus
                .refs
                .iter()
                .filter_map(|name| Some((name, focus.claimed.get(name)?)));
            hold_a_push(pass, dest, moved, record)
        }
        // A destination planned from its record: the push waits for the source's listing
        // (none comes when a fetch's trace gives none). A
        // local destination's files are read too; when they differ from the record, the plan
        // from the record still leads (see `sync_destination`), and the lease on the recorded
        // value stops the push as it would stop the push made after the fetch.
        (Trust::RecordWhenPushing, None, Ok(record)) => {
            let source = source_listing
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|l| l.clone());
            // Settled at the listing: nothing moves.
            source
                .filter(|source| !matches(settled.as_deref(), source))
                .and_then(|source| hold_a_push(pass, dest, source.refs().iter(), record))
        }
        _ => None,
    };
    Prepared {
        record: Some(record),
        settled,
        trust,
        listing,
        held,
    }
}

/// Starts, held (see [`held_push`]), the push a run expects to make to a destination it plans
/// from the record: each ref of `moved` (what an event says its refs point at now, or the
/// source's listing) at an id other than the recorded one, pushed there with a lease on the
/// recorded value, as the plan pushes a ref that moved forward. The run releases it only if
/// its plan makes exactly this push (a diverged ref, a ref the cache cannot reach, any
/// difference: it is dropped). None when nothing is expected to move, or the push would go in
/// bulk or several batches. (Git LFS objects go first as ever; a destination that hangs up on
/// a push held that long gets the push made again, see [`push_batch`].)
fn hold_a_push<'n>(
    pass: Pass<'_>,
    dest: &Remote,
    moved: impl Iterator<Item = (&'n String, &'n Oid)>,
    record: &Record,
) -> Option<HeldPush> {
    let mirror = pass.mirror;
    if pass.mode != Mode::Sync {
        return None;
    }
    let expected: Vec<RefPlan> = moved
        .filter_map(|(name, new)| {
            let old = record.refs.get(name);
            (old != Some(new)).then(|| RefPlan {
                name: name.clone(),
                action: if old.is_some() {
                    Action::Update
                } else {
                    Action::Create
                },
                old: old.cloned(),
                new: Some(new.clone()),
                note: None,
            })
        })
        .take(PUSH_BATCH + 1)
        .collect();
    let refs: Vec<&RefPlan> = expected.iter().collect();
    if refs.is_empty() || refs.len() > PUSH_BATCH || pushes_in_bulk(refs.len(), record.refs.len()) {
        return None;
    }
    let hooks = held_push::hooks_dir(pass.cache.dir())?;
    let dir = pass.cache.push_dir();
    let expected_args = push_args(dest, &refs, &[], mirror.atomic, Hooks::Skipped);
    let args = push_args(dest, &refs, &[], mirror.atomic, Hooks::Gate);
    HeldPush::start(pass.git, &dir, expected_args, args, &hooks, dest)
}

async fn sync_destination(
    pass: Pass<'_>,
    source_refs: &RefMap,
    dest: &Remote,
    prepared: Prepared<'_>,
) -> DestinationReport {
    let Pass {
        mirror,
        cache,
        git,
        mode,
        records,
        focus,
        stamp: _,
        lfs: lfs_step,
    } = pass;
    let url = dest.display();
    let key = RecordKey {
        source: &mirror.source,
        destination: dest,
        selection: &mirror.selection,
    };
    let Prepared {
        record,
        settled,
        trust,
        listing: mut started,
        held: started_push,
    } = prepared;
    // Settled at the source's refs (see `Record::settle`): nothing to push, nothing to record,
    // unless a local destination's files, read beside the fetch, say otherwise.
    if pass.stamp.is_some() && settled.as_deref() == pass.stamp {
        let agrees = match started.as_mut() {
            None => true,
            Some(listing) => {
                listing.as_mut().await;
                matches!(listing.as_mut().output_mut(), Some(Ok(refs)) if refs == source_refs)
            }
        };
        if agrees {
            return all_unchanged(url, source_refs, started.is_some());
        }
    }
    let record = match record {
        Some(record) => record,
        None => Record::load(records.store, key).await,
    };
    let mut record = match record {
        Ok(r) => r,
        Err(e) => {
            return DestinationReport::failed(
                url,
                ErrorReport::new(
                    ErrorKind::Other,
                    format!("nothing pushed: the sync record could not be read ({e})"),
                ),
            )
        }
    };
    let known: Cow<'_, RefMap> = match Record::with_assumed(&record.refs, records.assumed) {
        Cow::Borrowed(refs) => pass.scope(refs),
        Cow::Owned(refs) => Cow::Owned(pass.scope_owned(refs)),
    };
    // The plan from the record, and whether it is the run's plan (it pushes something).
    let mut plan_from_record: Option<(Plan, bool)> = None;
    if trust == Trust::RecordWhenPushing {
        match make_plan(
            mirror,
            cache,
            git,
            source_refs,
            &pass.scope(&record.refs),
            &known,
        )
        .await
        {
            Ok(plan) => {
                let pushes = plan.pushes().next().is_some();
                plan_from_record = Some((plan, pushes));
            }
            Err(e) => return DestinationReport::failed(url, e.into()),
        }
    }
    let listing = match (trust, &plan_from_record) {
        (Trust::RecordWhenPushing, Some((_, true))) => {
            // Not needed: stopped now (its git killed), not after the push.
            drop(started);
            None
        }
        // The focused fetch failed and the run fell back to the whole selection, which needs
        // the whole destination.
        (Trust::Record, _) if focus.is_none() => {
            Some(list_destination(mirror, dest, mode, git).await)
        }
        (Trust::Record, _) => None,
        // Nothing to push to a remote destination: the record stands in for it (reconcile
        // runs and `verify` list it).
        (Trust::RecordWhenPushing, _) if started.is_none() => None,
        (Trust::RecordWhenPushing, _) | (Trust::Listing, _) => listed(started).await,
    };
    let listed = listing.is_some();
    // Borrowed: the record stands in for the listing.
    let dest_refs: Cow<'_, RefMap> = match listing {
        Some(Ok(refs)) => Cow::Owned(pass.scope_owned(refs)),
        Some(Err(e)) => return DestinationReport::failed(url, e.into()),
        None => pass.scope(&record.refs),
    };
    let plan = match plan_from_record {
        Some((plan, true)) => plan,
        // The listing says what the record does: the same facts, the same plan.
        Some((plan, false)) if *dest_refs == *pass.scope(&record.refs) => plan,
        _ => match make_plan(mirror, cache, git, source_refs, &dest_refs, &known).await {
            Ok(p) => p,
            Err(e) => return DestinationReport::failed(url, e.into()),
        },
    };

    if mode == Mode::Plan {
        let refs = plan.refs.iter().map(|p| planned_report(p, &plan)).collect();
        return DestinationReport {
            url: url.to_owned(),
            ok: true,
            verified: listed,
            error: None,
            refs,
            lfs: None,
        }
        .finish_plan(&plan);
    }

    if plan.aborted {
        let diverged: Vec<&str> = plan.diverged().map(|r| r.name.as_str()).collect();
        let message = format!(
            "nothing pushed: divergence = abort and {} diverged",
            diverged.join(", ")
        );
        let refs = plan
            .refs
            .iter()
            .map(|p| aborted_report(p, &message))
            .collect();
        let dest_now = unless_the_record(dest_refs);
        update_record(&mut record, &plan, source_refs, dest_now.as_ref(), focus);
        let error = ErrorReport::new(ErrorKind::Diverged, message);
        return save_and_finish(
            DestinationReport {
                url: url.to_owned(),
                ok: false,
                verified: listed,
                error: Some(error),
                refs,
                lfs: None,
            },
            record,
            pass,
            source_refs,
            key,
        )
        .await;
    }

    // The LFS objects of what the destination is to hold go first; refs whose objects did
    // not all arrive are held back.
    let carried = lfs::carry(lfs_step, dest, lfs_wanted(&plan), &record.lfs).await;
    if carried
        .confirmed
        .iter()
        .any(|o| !record.lfs.objects.contains(o))
    {
        Arc::make_mut(&mut record.lfs)
            .objects
            .extend(carried.confirmed.iter().cloned());
    }
    let mut held = carried.held.clone();
    if mirror.atomic {
        if let Some(why) = plan.pushes().find_map(|p| held.get(&p.name)).cloned() {
            for p in plan.pushes() {
                held.entry(p.name.clone()).or_insert_with(|| {
                    ErrorReport::new(
                        why.kind,
                        "not pushed: the push is atomic and another ref's LFS objects did not all reach the destination",
                    )
                });
            }
        }
    }
    let pushes: Vec<RefPlan> = plan
        .pushes()
        .filter(|p| !held.contains_key(&p.name))
        .cloned()
        .collect();
    if pushes.is_empty() {
        let refs = plan
            .refs
            .iter()
            .map(|p| match held.get(&p.name) {
                Some(why) => held_report(p, why),
                None => settled_report(p, None, p.old.as_ref(), None),
            })
            .collect();
        let dest_now = unless_the_record(dest_refs);
        update_record(&mut record, &plan, source_refs, dest_now.as_ref(), focus);
        update_lfs_record(&mut record, &carried, dest_now.as_ref());
        return save_and_finish(
            DestinationReport {
                url: url.to_owned(),
                ok: false,
                verified: listed,
                error: None,
                refs,
                lfs: carried.report,
            },
            record,
            pass,
            source_refs,
            key,
        )
        .await;
    }

    let mut plan = plan;
    // Set when the re-plan after a lost lease aborts: the message for the refs it held back.
    let mut replan_aborted: Option<String> = None;
    // About how many refs the destination advertises to git push (a focused run's listing
    // is narrowed; the record knows the rest).
    let advertised = record.refs.len().max(dest_refs.len());
    let (mut statuses, mut push_error) = push(
        cache,
        git,
        dest,
        &pushes.iter().collect::<Vec<_>>(),
        mirror.atomic,
        advertised,
        started_push,
    )
    .await;
    let lease_lost: Vec<String> = statuses
        .iter()
        .filter(|(_, s)| s.kind == Some(ErrorKind::Lease))
        .map(|(n, _)| n.clone())
        .collect();
    // The refs planned afresh after a lost lease.
    let mut replanned_names: HashSet<String> = HashSet::new();
    if !lease_lost.is_empty() {
        // Someone pushed while we synced. Look again and re-plan once: the planner decides
        // afresh whether the new destination value is safe to move.
        tracing::info!(
            destination = url,
            refs = lease_lost.len(),
            "lease lost; re-planning once"
        );
        match ls_remote(dest, &mirror.selection, git).await {
            Ok(fresh) => {
                match make_plan(mirror, cache, git, source_refs, &pass.scope(&fresh), &known).await
                {
                    Ok(replanned) => {
                        // The refs whose lease failed, and any other ref whose plan the fresh
                        // listing changes (it can have moved too since the first listing, and
                        // a record standing in for it in a focused run can be wrong about refs
                        // this run did not push); never a ref the first push landed.
                        let same = |r: &RefPlan| {
                            plan.refs.iter().any(|p| {
                                p.name == r.name
                                    && p.action == r.action
                                    && p.old == r.old
                                    && p.new == r.new
                            })
                        };
                        let retry: Vec<&RefPlan> = replanned
                            .refs
                            .iter()
                            .filter(|r| statuses.get(&r.name).is_none_or(|s| s.flag == '!'))
                            .filter(|r| lease_lost.contains(&r.name) || !same(r))
                            .collect();
                        // A ref the first plan did not push has had no LFS step.
                        for r in &retry {
                            if r.action.pushes() && !carried.allows(&r.name, r.new.as_ref()) {
                                held.insert(r.name.clone(), ErrorReport::new(
                                    ErrorKind::Lease,
                                    "not pushed: the destination changed during the sync, and this ref's LFS objects were not checked; the next run syncs it",
                                ));
                            }
                        }
                        let to_push: Vec<&RefPlan> = retry
                            .iter()
                            .copied()
                            .filter(|r| r.action.pushes() && !held.contains_key(&r.name))
                            .collect();
                        if replanned.aborted {
                            let diverged: Vec<&str> =
                                replanned.diverged().map(|r| r.name.as_str()).collect();
                            replan_aborted = Some(format!(
                            "not pushed: the destination changed during the sync, and on a second look divergence = abort and {} diverged",
                            diverged.join(", ")
                        ));
                        }
                        let (again, again_error) = if to_push.is_empty() || replanned.aborted {
                            (BTreeMap::new(), None)
                        } else {
                            push(cache, git, dest, &to_push, mirror.atomic, fresh.len(), None).await
                        };
                        for r in retry {
                            statuses.remove(&r.name);
                            replanned_names.insert(r.name.clone());
                            match plan.refs.iter_mut().find(|p| p.name == r.name) {
                                Some(slot) => *slot = r.clone(),
                                None => plan.refs.push(r.clone()),
                            }
                        }
                        plan.refs.sort_by(|a, b| a.name.cmp(&b.name));
                        statuses.extend(again);
                        push_error = push_error.or(again_error);
                    }
                    Err(e) => push_error = push_error.or(Some(e)),
                }
            }
            Err(e) => push_error = push_error.or(Some(e)),
        }
    }

    // `git push --porcelain`'s per-ref status is the receiving server's own report, so it is
    // the outcome. A fresh listing is taken when asked for (`verify`, which reconcile runs
    // set), or when the report is incomplete: git failed as a whole, or a pushed ref has no
    // status. git's summary text is never trusted either way.
    let reported = plan
        .pushes()
        .filter(|p| !held.contains_key(&p.name))
        .all(|p| statuses.contains_key(&p.name));
    let verified = if mirror.verify || push_error.is_some() || !reported {
        match verify_listing(dest, &mirror.selection, git).await {
            Ok(v) => Some(v),
            Err(e) => {
                push_error = push_error.or(Some(GitFailure::new(
                    e.kind,
                    format!("could not verify the push: {}", e.message),
                )));
                None
            }
        }
    } else {
        None
    };
    let refs = plan
        .refs
        .iter()
        .map(|p| {
            if let Some(message) = &replan_aborted {
                if replanned_names.contains(&p.name) {
                    return aborted_report(p, message);
                }
            }
            if let Some(why) = held.get(&p.name) {
                return held_report(p, why);
            }
            let status = statuses.get(&p.name);
            settled_report(
                p,
                status,
                held_after(p, status, verified.as_ref()),
                push_error.as_ref(),
            )
        })
        .collect();
    // The record follows what the destination holds: the listing when there is one, else the
    // server's report, which is complete whenever no listing was taken on purpose. A failed
    // verification leaves the record alone.
    let unverifiable = verified.is_none() && (push_error.is_some() || !reported);
    if !unverifiable {
        let now: RefMap = match &verified {
            Some(v) => v.clone(),
            None => plan
                .refs
                .iter()
                .filter_map(|p| {
                    let now = held_after(p, statuses.get(&p.name), None)?;
                    Some((p.name.clone(), now.clone()))
                })
                .collect(),
        };
        update_record(&mut record, &plan, source_refs, Some(&now), focus);
        update_lfs_record(&mut record, &carried, Some(&now));
    }
    let report = DestinationReport {
        url: url.to_owned(),
        ok: false,
        verified: verified.is_some(),
        error: push_error.map(ErrorReport::from),
        refs,
        lfs: carried.report,
    };
    save_and_finish(report, record, pass, source_refs, key).await
}

/// The refs the destination is to hold after this push, with their values: what is pushed,
/// and what it already holds as the source does. Their LFS objects go first.
fn lfs_wanted(plan: &Plan) -> RefMap {
    plan.refs
        .iter()
        .filter_map(|p| {
            let value = match p.action {
                Action::Create | Action::Update | Action::Force => p.new.as_ref(),
                Action::Unchanged if p.old == p.new => p.new.as_ref(),
                _ => None,
            }?;
            Some((p.name.clone(), value.clone()))
        })
        .collect()
}

/// A ref the LFS step held back: not pushed (or, already there, without all its LFS objects on
/// the destination), for the reason given.
fn held_report(p: &RefPlan, why: &ErrorReport) -> RefReport {
    let mut r = settled_report(p, None, p.old.as_ref(), None);
    r.outcome = Some(Outcome::Failed);
    r.kind = Some(why.kind);
    r.reason = Some(why.message.clone());
    r.hint = Some(why.hint.clone());
    r
}

/// Moves the record's LFS tips to the values whose objects are all on the destination and
/// that it now holds; forgets the tips of refs the record forgot. With LFS off the tips stay
/// where they were, so turning it on later scans everything pushed meanwhile.
/// `dest_now`: `None` when the record's own refs stood for the destination.
fn update_lfs_record(record: &mut Record, carried: &Carried, dest_now: Option<&RefMap>) {
    if !carried.enabled {
        return;
    }
    // `cleared` is in name order: the tables are walked once (see `SortedLookup`).
    let (mut now, mut tips) = (
        SortedLookup::new(dest_now.unwrap_or(&record.refs)),
        SortedLookup::new(&record.lfs.tips),
    );
    let new_tips: Vec<(&String, &Oid)> = carried
        .cleared
        .iter()
        .filter(|&(name, value)| now.get(name) == Some(value) && tips.get(name) != Some(value))
        .collect();
    if !new_tips.is_empty() {
        let tips = &mut Arc::make_mut(&mut record.lfs).tips;
        for (name, value) in new_tips {
            tips.insert(name.clone(), value.clone());
        }
    }
    let refs = &record.refs;
    // Copied (when shared) only if a tip is to go.
    if !keys_within(&record.lfs.tips, refs) {
        Arc::make_mut(&mut record.lfs)
            .tips
            .retain(|name, _| refs.contains_key(name));
    }
}

/// Whether every name in `inner` is a name in `outer`, by one walk over both sorted tables:
/// a lookup per name would compare each about 14 times in a table of 10,000 refs, on every
/// run.
fn keys_within(inner: &RefMap, outer: &RefMap) -> bool {
    let mut outer = outer.keys();
    inner
        .keys()
        .all(|name| outer.by_ref().find(|other| *other >= name) == Some(name))
}

/// What the destination holds for a planned ref after the push: the fresh listing's value when
/// there is one; else the server's report: its new value unless the ref was rejected (or not
/// reported), in which case what it held before.
fn held_after<'a>(
    p: &'a RefPlan,
    status: Option<&PushStatus>,
    verified: Option<&'a RefMap>,
) -> Option<&'a Oid> {
    match verified {
        Some(v) => v.get(&p.name),
        None if status.is_some_and(|s| s.flag != '!') => p.new.as_ref(),
        None => p.old.as_ref(),
    }
}

async fn make_plan(
    mirror: &Mirror,
    cache: &Cache,
    git: &Git,
    source_refs: &RefMap,
    dest_refs: &RefMap,
    record: &RefMap,
) -> Result<Plan, GitFailure> {
    let input = PlanInput {
        source: source_refs,
        dest: dest_refs,
        record,
    };
    let questions = plan::ancestry_questions(input);
    let answers = cache.ancestry(&questions, git).await?;
    let yes: HashSet<(&Oid, &Oid)> = questions
        .iter()
        .zip(answers)
        .filter(|(_, yes)| *yes)
        .map(|((a, d), _)| (a, d))
        .collect();
    Ok(plan::plan(input, mirror.policy, |a, d| {
        a == d || yes.contains(&(a, d))
    }))
}

/// One ref's result as `git push --porcelain` reported it.
#[derive(Debug, Clone)]
pub struct PushStatus {
    /// `+` forced, ` ` fast-forward, `*` new, `-` deleted, `=` up to date, `!` rejected.
    pub flag: char,
    pub summary: String,
    pub kind: Option<ErrorKind>,
}

/// git push compares each explicit refspec, and each `--force-with-lease=<ref>:<value>`, with
/// every ref the destination advertises, formatting a few candidate names per pair (about
/// 1.2 µs a pair here): pushing `n` refs to a destination of `m` costs `n × (m + n)` such
/// pairs. A first sync of 10,000 refs took 32 s that way. Past this many pairs, the refs go
/// by a pattern refspec from a repository holding exactly them, with leases git looks up by
/// name (see [`push_batch`]). That repository costs a few milliseconds, these pairs 24.
const BULK_PAIRS: usize = 20_000;

/// Where a [`SendingRepo`](crate::engine::cache::SendingRepo) holds the refs of a bulk push:
/// `refs/x` as `refs/ferry-new/x` when the destination lacks it, as `refs/ferry-send/x` when it
/// moves, and the value a moved ref's lease expects as `refs/ferry-lease/x`.
const CREATE_NAMESPACE: &str = "refs/ferry-new/";
const UPDATE_NAMESPACE: &str = "refs/ferry-send/";
const LEASE_NAMESPACE: &str = "refs/ferry-lease/";
/// The name the destination has in a bulk push of moved refs (given on the command line, see
/// [`push_batch`]): leases read from remote-tracking refs need a named remote.
const BULK_REMOTE: &str = "ferry-dest";

/// Whether `pushes` refs (creates and updates) for a destination advertising about
/// `advertised` refs go in one pattern push (see [`BULK_PAIRS`]).
fn pushes_in_bulk(pushes: usize, advertised: usize) -> bool {
    pushes >= 2 && pushes.saturating_mul(pushes.saturating_add(advertised)) >= BULK_PAIRS
}

/// Refs a bulk push sends by one pattern refspec from a
/// [`SendingRepo`](crate::engine::cache::SendingRepo).
#[derive(Clone, Copy)]
struct Bulk<'a> {
    refs: &'a [&'a RefPlan],
    /// Where the sending repository holds them: [`CREATE_NAMESPACE`] or [`UPDATE_NAMESPACE`].
    namespace: &'static str,
}

impl Bulk<'_> {
    /// Moved refs' leases are remote-tracking refs, which need the destination named.
    fn tracked(&self) -> bool {
        self.namespace == UPDATE_NAMESPACE
    }
}

/// Pushes the planned refs from the cache, with a lease on every one (a create's: the ref must
/// not exist yet), except many creates to an HTTP(S) destination, which need none (see
/// [`push_listed_creates`]). Returns each ref's porcelain status and, when git failed as a
/// whole, the classified failure. Many creates and updates go in bulk (see
/// [`pushes_in_bulk`]); deletes always go one refspec each (a pattern cannot delete).
///
/// `held`: a push started ahead of the plan (see [`held_push`]); released when it is exactly
/// the push of the first batch, else dropped (it sends nothing) before anything is pushed.
async fn push(
    cache: &Cache,
    git: &Git,
    dest: &Remote,
    refs: &[&RefPlan],
    atomic: bool,
    advertised: usize,
    held: Option<HeldPush>,
) -> (BTreeMap<String, PushStatus>, Option<GitFailure>) {
    let (sent, deletes): (Vec<&RefPlan>, Vec<&RefPlan>) = refs
        .iter()
        .partition(|r| r.new.is_some() && r.name.starts_with("refs/"));
    let (listed_creates, sent) = take_listed_creates(dest, sent, atomic, advertised);
    let sending = if pushes_in_bulk(sent.len(), advertised) {
        let mut held = RefMap::new();
        for r in &sent {
            let rest = &r.name["refs/".len()..];
            let Some(new) = &r.new else { continue };
            match &r.old {
                None => {
                    held.insert(format!("{CREATE_NAMESPACE}{rest}"), new.clone());
                }
                Some(old) => {
                    held.insert(format!("{UPDATE_NAMESPACE}{rest}"), new.clone());
                    held.insert(format!("{LEASE_NAMESPACE}{rest}"), old.clone());
                }
            }
        }
        match cache.sending_repo(&held, git).await {
            Ok(repo) => Some(repo),
            Err(e) => {
                tracing::warn!(destination = dest.display(), error = %e.message, "pushing one refspec per ref");
                None
            }
        }
    } else {
        None
    };
    let (bulk, explicit) = match sending {
        Some(_) => (sent, deletes),
        None if listed_creates.is_empty() => (Vec::new(), refs.to_vec()),
        None => (Vec::new(), sent.into_iter().chain(deletes).collect()),
    };
    let (creates, updates): (Vec<&RefPlan>, Vec<&RefPlan>) =
        bulk.iter().partition(|r| r.old.is_none());
    let bulks = [
        Bulk {
            refs: &creates,
            namespace: CREATE_NAMESPACE,
        },
        Bulk {
            refs: &updates,
            namespace: UPDATE_NAMESPACE,
        },
    ];
    let push_dir = cache.push_dir();
    let dir = sending.as_ref().map_or(push_dir.as_path(), |s| s.path());
    let mut statuses = BTreeMap::new();
    let mut failure = None;
    let mut batches: Vec<(&Path, &[&RefPlan], Vec<Bulk>)> = Vec::new();
    if atomic {
        batches.push((dir, &explicit, bulks.to_vec()));
    } else {
        // Creates and moves together: one push (each costs the destination's advertisement).
        // Creates alone, the bulk of a first sync, go to the URL, so that git has no
        // remote-tracking refs to write afterwards (one per pushed ref of a named remote).
        if !bulk.is_empty() {
            batches.push((dir, &[], bulks.to_vec()));
        }
        for chunk in explicit.chunks(PUSH_BATCH) {
            batches.push((&push_dir, chunk, vec![]));
        }
    }
    let mut held = held;
    for (dir, explicit, bulks) in batches {
        let args = push_args(dest, explicit, &bulks, atomic, Hooks::Skipped);
        let held = held.take().filter(|h| h.is(dir, &args));
        let refs = explicit
            .iter()
            .chain(bulks.iter().flat_map(|b| b.refs.iter()));
        match push_batch(cache, git, dest, dir, &args, refs, held).await {
            Ok((parsed, batch_failure)) => {
                statuses.extend(parsed);
                failure = failure.or(batch_failure);
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if !listed_creates.is_empty() {
        // A held push no batch took stops at its gate now, before this push.
        drop(held);
        match push_listed_creates(cache, git, dest, &listed_creates).await {
            Ok((parsed, batch_failure)) => {
                statuses.extend(parsed);
                failure = failure.or(batch_failure);
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    (statuses, failure)
}

/// The name a [`push_listed_creates`] push gives its destination, in its own configuration.
const LISTED_REMOTE: &str = "ferry-creates";

/// Splits the creates that go by [`push_listed_creates`] off `sent`: many creates to an
/// HTTP(S) destination, in a push that is not atomic (an atomic one is a single push).
///
/// Over HTTP(S), git hands a push to its remote helper, which spells a pattern refspec out as
/// one explicit refspec per ref and a bare `--force-with-lease` as one lease per ref; the
/// helper's `send-pack` then matches every refspec's source against every ref of the
/// repository it runs in, and every lease against every ref the push touches, formatting a
/// few candidate names per pair (see [`BULK_PAIRS`]). A bulk push of 10,000 creates took 56 s
/// that way, nearly all of it in those two comparisons.
fn take_listed_creates<'p>(
    dest: &Remote,
    sent: Vec<&'p RefPlan>,
    atomic: bool,
    advertised: usize,
) -> (Vec<&'p RefPlan>, Vec<&'p RefPlan>) {
    let creates = sent.iter().filter(|r| r.old.is_none()).count();
    if atomic || dest.transport != Transport::Http || !pushes_in_bulk(creates, advertised) {
        return (Vec::new(), sent);
    }
    sent.into_iter().partition(|r| r.old.is_none())
}

/// Pushes creates as `<new id>:<ref>` refspecs from the push repository, which holds no refs,
/// so no source is compared with any ref. The refspecs are the `push` values of a remote
/// [`LISTED_REMOTE`] in a configuration file git includes, so that their number is not
/// bounded by the kernel's limit on arguments and one push carries them all (a second push
/// would have its refspecs compared with every ref the first one created).
///
/// The push is not forced and carries no lease, which would cost a comparison with every ref
/// it touches. It needs none: git sends a create as an update from "no ref" and the
/// destination applies it only while the ref does not exist (else it refuses it, as it
/// refuses a leased push that lost that race). A ref that exists when git reads the
/// destination's advertisement is a tag git refuses to overwrite, a ref at or to a non-commit
/// git refuses without force, or a ref git moves only by a fast-forward (nothing on the
/// destination is lost; the report says it was updated, see [`settled_report`]). git's
/// refusals there are what a lost lease would be, so they are reported as one
/// ([`ErrorKind::Lease`]) and the ref is re-planned.
async fn push_listed_creates(
    cache: &Cache,
    git: &Git,
    dest: &Remote,
    creates: &[&RefPlan],
) -> Result<(BTreeMap<String, PushStatus>, Option<GitFailure>), GitFailure> {
    // An absolute path (every front end makes the cache root absolute): git refuses a
    // relative include given with `-c`.
    let config = cache.push_config(&listed_creates_config(dest.git_url(), creates))?;
    let args: Vec<String> = [
        "-c".to_owned(),
        format!("include.path={}", config.display()),
        "push".into(),
        "--porcelain".into(),
        "--progress".into(),
        "--no-verify".into(),
        "--".into(),
        LISTED_REMOTE.into(),
    ]
    .into();
    let (mut parsed, failure) = push_batch(
        cache,
        git,
        dest,
        &cache.push_dir(),
        &args,
        creates.iter(),
        None,
    )
    .await?;
    for status in parsed.values_mut() {
        if status.flag == '!' && found_the_ref(&status.summary) {
            status.kind = Some(ErrorKind::Lease);
        }
    }
    Ok((parsed, failure))
}

/// Whether git refused to push a create because the destination already has the ref (its own
/// check against the advertisement, not the destination's).
fn found_the_ref(summary: &str) -> bool {
    summary.starts_with("[rejected]")
        && [
            "already exists",
            "fetch first",
            "non-fast-forward",
            "needs force",
        ]
        .iter()
        .any(|why| summary.contains(why))
}

/// The configuration of [`push_listed_creates`]: remote [`LISTED_REMOTE`] at `url`, one `push`
/// refspec per create. Values are quoted (a ref name may hold `#`, `;` or `"`).
fn listed_creates_config(url: &str, creates: &[&RefPlan]) -> String {
    let mut config = format!(
        "[remote \"{LISTED_REMOTE}\"]\n\turl = {}\n",
        config_value(url)
    );
    for r in creates {
        if let Some(new) = &r.new {
            config.push_str("\tpush = ");
            config.push_str(&config_value(&format!("{new}:{}", r.name)));
            config.push('\n');
        }
    }
    config
}

/// `value` as a double-quoted git configuration value.
fn config_value(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            _ => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Whether a push runs git's hooks: never, except a held push's gate (see [`held_push`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hooks {
    Skipped,
    Gate,
}

/// The arguments of one `git push` from a directory, a lease on every ref: `explicit` refs
/// (up to [`PUSH_BATCH`]) one refspec and one `--force-with-lease=<ref>:<value>` each, `+`
/// only on forced refs; each bulk (refs held by the directory, a
/// [`SendingRepo`](crate::engine::cache::SendingRepo)) by one pattern `<namespace>*:refs/*`,
/// and a bare `--force-with-lease`, which takes each ref's expected value from its
/// remote-tracking ref. Moved refs have one: the destination is named [`BULK_REMOTE`] for this
/// one call, its tracking refs under [`LEASE_NAMESPACE`]. A create has none (with the
/// destination given as a URL, no ref has), so the ref must not exist. A lease that holds lets
/// git move the ref whatever the ancestry, as the explicit leases do.
fn push_args(
    dest: &Remote,
    explicit: &[&RefPlan],
    bulks: &[Bulk<'_>],
    atomic: bool,
    hooks: Hooks,
) -> Vec<String> {
    let bulks: Vec<&Bulk> = bulks.iter().filter(|b| !b.refs.is_empty()).collect();
    let tracked = bulks.iter().any(|b| b.tracked());
    let mut args: Vec<String> = Vec::new();
    if tracked {
        args.extend([
            "-c".into(),
            format!("remote.{BULK_REMOTE}.url={}", dest.git_url()),
            "-c".into(),
            format!("remote.{BULK_REMOTE}.fetch=+refs/*:{LEASE_NAMESPACE}*"),
        ]);
    }
    args.extend(["push".into(), "--porcelain".into(), "--progress".into()]);
    if hooks == Hooks::Skipped {
        args.push("--no-verify".into());
    }
    if atomic {
        args.push("--atomic".into());
    }
    // Every ref carries a lease, creates too (an empty value: the ref must not exist yet), so
    // a ref created on the destination since it was listed fails the lease and gets
    // re-planned instead of being pushed over.
    for r in explicit {
        let expect = r.old.as_ref().map_or("", Oid::as_str);
        args.push(format!("--force-with-lease={}:{expect}", r.name));
    }
    if !bulks.is_empty() {
        args.push("--force-with-lease".into());
    }
    args.push("--".into());
    args.push(if tracked {
        BULK_REMOTE.into()
    } else {
        dest.git_url().into()
    });
    for r in explicit {
        args.push(match (&r.new, r.action) {
            (None, _) => format!(":{}", r.name),
            (Some(new), Action::Force) => format!("+{new}:{}", r.name),
            (Some(new), _) => format!("{new}:{}", r.name),
        });
    }
    for b in &bulks {
        args.push(format!("{}*:refs/*", b.namespace));
    }
    args
}

/// Runs one `git push` of [`push_args`] from `dir` (or releases `held`, the same push started
/// ahead of time) and reads the status of each of `refs`.
async fn push_batch<'r>(
    cache: &Cache,
    git: &Git,
    dest: &Remote,
    dir: &Path,
    args: &[String],
    refs: impl Iterator<Item = &'r &'r RefPlan> + Clone,
    held: Option<HeldPush>,
) -> Result<(BTreeMap<String, PushStatus>, Option<GitFailure>), GitFailure> {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let call = Call {
        remote: Some(dest),
        transfer: true,
        ..Call::default()
    };
    let out = match held {
        Some(held) => {
            let out = held.release().await?;
            if out.success || !parse_porcelain(&out.stdout).is_empty() {
                out
            } else {
                // The held push failed as a whole before any ref's status (the destination
                // hung up while it waited, say): it sent nothing git could report, and every
                // ref carries its lease, so the push is simply made again.
                tracing::debug!(
                    destination = dest.display(),
                    error = %summarize_stderr(&out.stderr),
                    "the push started ahead failed; pushing again"
                );
                git.run(dir, &argv, call).await?
            }
        }
        None => git.run(dir, &argv, call).await?,
    };
    cache.note_damage(&out.stderr, git).await;
    let parsed = parse_porcelain(&out.stdout);
    let covered = refs.clone().all(|r| parsed.contains_key(&r.name));
    // Not every ref reported, or every ref looked fine yet git failed: the push failed as a
    // whole, and git's words say why.
    let failed = !out.success && (!covered || parsed.values().all(|s| s.flag != '!'));
    let failure =
        failed.then(|| failure_from_stderr(&format!("push to {}", dest.display()), &out.stderr));
    Ok((parsed, failure))
}

/// Parses `git push --porcelain` stdout: `<flag>\t<from>:<to>\t<summary>` per ref. Public
/// for the fuzz targets: it reads what a remote's server says.
pub fn parse_porcelain(stdout: &str) -> BTreeMap<String, PushStatus> {
    let mut out = BTreeMap::new();
    for line in stdout.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(flag), Some(spec), Some(summary)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(flag) = flag.chars().next().filter(|_| flag.len() == 1) else {
            continue;
        };
        let Some((_, to)) = spec.rsplit_once(':') else {
            continue;
        };
        let kind = (flag == '!').then(|| classify_ref_rejection(summary));
        out.insert(
            to.to_owned(),
            PushStatus {
                flag,
                summary: summary.to_owned(),
                kind,
            },
        );
    }
    out
}

fn planned_report(p: &RefPlan, plan: &Plan) -> RefReport {
    let divergence = p.note.is_some_and(Note::is_divergence);
    RefReport {
        name: p.name.clone(),
        action: p.action,
        outcome: None,
        old: p.old.clone(),
        new: p.new.clone(),
        kind: divergence.then_some(ErrorKind::Diverged),
        reason: p.note.map(|n| n.describe().to_owned()).or_else(|| {
            (plan.aborted && p.action.pushes())
                .then(|| "not pushed: divergence = abort and another ref diverged".to_owned())
        }),
        hint: divergence.then(|| ErrorKind::Diverged.hint().to_owned()),
    }
}

fn aborted_report(p: &RefPlan, message: &str) -> RefReport {
    let mut r = settled_report(p, None, p.old.as_ref(), None);
    if p.action.pushes() {
        r.outcome = Some(Outcome::Failed);
        r.kind = Some(ErrorKind::Diverged);
        r.reason = Some(message.to_owned());
        r.hint = Some(ErrorKind::Diverged.hint().to_owned());
    }
    r
}

/// The final word on one ref: what the destination holds now (`now`) against what the plan
/// wanted, explained by the porcelain status or the push's failure.
fn settled_report(
    p: &RefPlan,
    status: Option<&PushStatus>,
    now: Option<&Oid>,
    push_error: Option<&GitFailure>,
) -> RefReport {
    let mut r = RefReport {
        name: p.name.clone(),
        action: p.action,
        outcome: None,
        old: p.old.clone(),
        new: p.new.clone(),
        kind: None,
        reason: p.note.map(|n| n.describe().to_owned()),
        hint: None,
    };
    let landed = now == p.new.as_ref();
    r.outcome = Some(match p.action {
        Action::Unchanged => Outcome::Unchanged,
        Action::Skip if p.note.is_some_and(Note::is_divergence) => {
            r.kind = Some(ErrorKind::Diverged);
            r.hint = Some(ErrorKind::Diverged.hint().to_owned());
            Outcome::Diverged
        }
        Action::Skip => Outcome::Unchanged,
        _ if landed => match p.action {
            // A create pushed without a lease (see [`push_listed_creates`]) that git
            // fast-forwarded: the destination held the ref after all (created during the sync,
            // or behind the back of the record the run planned from).
            Action::Create if status.is_some_and(|s| s.flag == ' ') => {
                r.reason = Some(
                    "the destination already held this ref, at an older commit of this history; the push fast-forwarded it".to_owned(),
                );
                Outcome::Updated
            }
            Action::Create => Outcome::Created,
            Action::Delete => Outcome::Deleted,
            Action::Force => Outcome::Forced,
            // A fast-forward by the plan's ancestry check, even where git calls it forced
            // (git reports every tag move as a forced update).
            _ => Outcome::Updated,
        },
        _ => match status {
            Some(s) if s.flag == '!' => {
                let kind = s.kind.unwrap_or(ErrorKind::Other);
                r.kind = Some(kind);
                r.reason = Some(rejection_reason(kind, &s.summary));
                r.hint = Some(kind.hint().to_owned());
                Outcome::Rejected
            }
            _ => {
                let kind = push_error.map_or(ErrorKind::Other, |e| e.kind);
                r.kind = Some(kind);
                r.reason = Some(match (status, push_error) {
                    (_, Some(e)) => format!("not applied: {}", e.message),
                    (Some(s), None) => format!("git reported '{}' but the destination does not hold the new value", s.summary),
                    (None, None) => "git did not report this ref and the destination does not hold the new value".to_owned(),
                });
                r.hint = Some(kind.hint().to_owned());
                Outcome::Failed
            }
        },
    });
    r
}

fn rejection_reason(kind: ErrorKind, summary: &str) -> String {
    let words = match kind {
        ErrorKind::HiddenRef => "the destination hides this ref",
        ErrorKind::Protected => "a hook or protection rule on the destination declined it",
        ErrorKind::NonFastForward => "the destination refuses non-fast-forward updates",
        ErrorKind::DeletionProhibited => "the destination refuses deletions",
        ErrorKind::Lease => "the destination changed during the sync (lease lost twice)",
        _ if summary.contains("atomic") => {
            "not applied: the push is atomic and another ref was refused"
        }
        _ => "the destination refused it",
    };
    format!("{words} ({})", summary.trim())
}

/// The destination's refs as the record needs them after a run that pushed nothing: `None`
/// when the record itself stood for them (then no copy of a table of thousands is made).
fn unless_the_record(dest_refs: Cow<'_, RefMap>) -> Option<RefMap> {
    match dest_refs {
        Cow::Borrowed(_) => None,
        Cow::Owned(refs) => Some(refs),
    }
}

/// The new record, in place: for every planned ref, the destination's value when it equals
/// the source's (ferry's intent holds); diverged and failed refs keep their old entry; refs
/// gone on both sides, and entries no plan names, are forgotten. A focused run keeps every
/// entry outside its focus as it was. `dest_now`: `None` when the record itself stood for the
/// destination (then each planned ref keeps its entry).
fn update_record(
    record: &mut Record,
    plan: &Plan,
    source_refs: &RefMap,
    dest_now: Option<&RefMap>,
    focus: Option<&BTreeSet<String>>,
) {
    let planned: HashSet<&str> = plan.refs.iter().map(|p| p.name.as_str()).collect();
    let kept =
        |name: &String| planned.contains(name.as_str()) || focus.is_some_and(|f| !f.contains(name));
    // The record's table is copied (when shared) only on its first real change.
    if record.refs.keys().any(|name| !kept(name)) {
        Arc::make_mut(&mut record.refs).retain(|name, _| kept(name));
    }
    let Some(dest_now) = dest_now else {
        return;
    };
    // The plan's refs come in name order: each table is walked once (see `SortedLookup`),
    // and the record changes after the walk, only where it must.
    let (mut source, mut dest, mut recorded) = (
        SortedLookup::new(source_refs),
        SortedLookup::new(dest_now),
        SortedLookup::new(&record.refs),
    );
    let mut changes: Vec<(&String, Option<&Oid>)> = Vec::new();
    for p in &plan.refs {
        let (s, d, r) = (
            source.get(&p.name),
            dest.get(&p.name),
            recorded.get(&p.name),
        );
        match (s, d) {
            (Some(s), Some(d)) if s == d && r != Some(s) => changes.push((&p.name, Some(s))),
            (None, None) if r.is_some() => changes.push((&p.name, None)),
            _ => {}
        }
    }
    if changes.is_empty() {
        return;
    }
    let refs = Arc::make_mut(&mut record.refs);
    for (name, value) in changes {
        match value {
            Some(value) => refs.insert(name.clone(), value.clone()),
            None => refs.remove(name),
        };
    }
}

/// A destination settled at the source's refs, as a no-op reports it: every ref unchanged.
fn all_unchanged(url: &str, source_refs: &RefMap, verified: bool) -> DestinationReport {
    let refs = source_refs
        .iter()
        .map(|(name, oid)| RefReport {
            name: name.clone(),
            action: Action::Unchanged,
            outcome: Some(Outcome::Unchanged),
            old: Some(oid.clone()),
            new: Some(oid.clone()),
            kind: None,
            reason: None,
            hint: None,
        })
        .collect();
    DestinationReport {
        url: url.to_owned(),
        ok: true,
        verified,
        error: None,
        refs,
        lfs: None,
    }
    .finish()
}

/// Settles the record when the pass read the whole source and the record ends it holding
/// exactly the source's refs (some: an empty record keeps a first sync's rules), with every ref's LFS objects on the destination when LFS is on
/// (see [`Record::settle`]); saves it; and finishes the report.
async fn save_and_finish(
    mut report: DestinationReport,
    mut record: Record,
    pass: Pass<'_>,
    source_refs: &RefMap,
    key: RecordKey<'_>,
) -> DestinationReport {
    if let Some(stamp) = pass.stamp {
        let settles = !record.refs.is_empty()
            && *record.refs == *source_refs
            && (pass.lfs.policy.mode == LfsMode::Off || record.lfs.tips == *record.refs);
        record.settle(settles.then(|| stamp.to_owned()));
    }
    if let Err(e) = record.save(pass.records.store, key).await {
        report.error = report.error.or(Some(ErrorReport::new(
            ErrorKind::Other,
            format!("the sync record could not be saved ({e}); the next run plans from the record as it was before this run"),
        )));
    }
    free_aside(record);
    report.finish()
}

/// Drops `value` on a thread of its own. Freeing the strings of a table of 10,000 refs (a
/// record holds up to four: as loaded and as changed, refs and LFS tips; a report holds one
/// ref report each) takes milliseconds the run need not wait for, and a process that exits
/// first skips them altogether. (When no thread can be started, the value is dropped here.)
pub fn free_aside<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("ferry-free".into())
        .spawn(move || drop(value));
}

impl DestinationReport {
    fn finish_plan(mut self, plan: &Plan) -> DestinationReport {
        if plan.aborted {
            self.error = Some(ErrorReport::new(
                ErrorKind::Diverged,
                "a sync would push nothing here: divergence = abort and a ref diverged",
            ));
        }
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_within_is_true_exactly_when_every_name_is_in_the_outer_table() {
        let table = |names: &[&str]| -> RefMap {
            names
                .iter()
                .map(|n| (format!("refs/heads/{n}"), oid('a')))
                .collect()
        };
        let outer = table(&["a", "c", "e"]);
        assert!(keys_within(&table(&[]), &outer));
        assert!(keys_within(&table(&["a", "e"]), &outer));
        assert!(keys_within(&outer, &outer));
        assert!(!keys_within(&table(&["b"]), &outer));
        assert!(!keys_within(&table(&["a", "d"]), &outer));
        assert!(!keys_within(&table(&["f"]), &outer));
        assert!(!keys_within(&table(&["a"]), &table(&[])));
    }

    #[test]
    fn porcelain_lines_are_parsed_per_ref() {
        let out = "To /x.git\n \tabc:refs/heads/main\t1111..2222\n+\tdef:refs/heads/f\t3333...4444 (forced update)\n-\t:refs/heads/gone\t[deleted]\n*\tabc:refs/tags/v1\t[new tag]\n!\tabc:refs/pull/1/head\t[remote rejected] (deny updating a hidden ref)\n!\tabc:refs/heads/p\t[rejected] (stale info)\nDone\n";
        let s = parse_porcelain(out);
        assert_eq!(s.len(), 6);
        assert_eq!(s["refs/heads/main"].flag, ' ');
        assert_eq!(s["refs/heads/f"].flag, '+');
        assert_eq!(s["refs/heads/gone"].flag, '-');
        assert_eq!(s["refs/pull/1/head"].kind, Some(ErrorKind::HiddenRef));
        assert_eq!(s["refs/heads/p"].kind, Some(ErrorKind::Lease));
        assert_eq!(s["refs/tags/v1"].kind, None);
    }

    #[test]
    fn refs_go_in_bulk_once_git_s_pairwise_matching_would_cost_more() {
        // A branch or two: one refspec each, whatever the destination holds.
        assert!(!pushes_in_bulk(0, 100_000));
        assert!(!pushes_in_bulk(1, 100_000));
        // A handful on a large destination: each would be compared with 10,000 refs.
        assert!(pushes_in_bulk(2, 10_000));
        // On an empty destination only the pushed refs themselves are compared.
        assert!(!pushes_in_bulk(100, 0));
        assert!(pushes_in_bulk(142, 0));
        assert!(pushes_in_bulk(usize::MAX, usize::MAX), "no overflow");
    }

    #[test]
    fn only_plain_selected_ref_names_narrow_a_sync() {
        for name in [
            "refs/heads/main",
            "refs/tags/v1.0",
            "refs/heads/feature/x-y_z",
        ] {
            assert!(is_plain_ref_name(name), "{name}");
        }
        for name in [
            "main",
            "refs/heads/*",
            "refs/heads/a:b",
            "refs/heads/a..b",
            "refs/heads/a b",
            "refs/heads/x@{1}",
            "refs/heads/x^",
            "refs/heads/x.lock",
            "refs/heads/",
            "refs/heads/a\nb",
        ] {
            assert!(!is_plain_ref_name(name), "{name}");
        }
        let remote = |url: &str| Remote::parse(url, std::path::Path::new("/")).unwrap();
        let mirror = Mirror {
            name: "m".into(),
            source: remote("https://example.com/src.git"),
            destinations: vec![remote("https://example.com/dst.git")],
            selection: RefSelection::default(),
            policy: Default::default(),
            atomic: false,
            create: false,
            verify: false,
            lfs: Default::default(),
        };
        let names = |refs: &[&str]| refs.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>();
        let main = names(&["refs/heads/main"]);
        assert!(narrowed(&mirror, Mode::Sync, &main).is_some());
        assert!(narrowed(&mirror, Mode::Sync, &[]).is_none());
        assert!(narrowed(&mirror, Mode::Plan, &main).is_none());
        let unselected = names(&["refs/heads/main", "refs/pull/1/head"]);
        assert!(narrowed(&mirror, Mode::Sync, &unselected).is_none());
        let verifying = Mirror {
            verify: true,
            ..mirror
        };
        assert!(narrowed(&verifying, Mode::Sync, &main).is_none());
    }

    fn oid(c: char) -> Oid {
        Oid::parse(&c.to_string().repeat(40)).unwrap()
    }

    /// git reads back exactly the refspecs written, names with the characters a config file
    /// treats specially included.
    #[test]
    fn the_listed_creates_file_gives_git_every_refspec_as_written() {
        let names = [
            "refs/heads/main",
            "refs/heads/hash#not-a-comment",
            "refs/heads/semi;colon",
            "refs/tags/q\"uote",
            "refs/heads/caf\u{e9}",
        ];
        let plans: Vec<RefPlan> = names
            .iter()
            .map(|n| RefPlan {
                name: (*n).to_owned(),
                action: Action::Create,
                old: None,
                new: Some(oid('c')),
                note: None,
            })
            .collect();
        let refs: Vec<&RefPlan> = plans.iter().collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creates.config");
        let url = "https://example.com/a \"b\"\\c.git";
        std::fs::write(&file, listed_creates_config(url, &refs)).unwrap();
        let file = file.display().to_string();
        let read = |key: &str| {
            crate::engine::test_git(dir.path(), &["config", "-f", &file, "--get-all", key], None)
        };
        let pushes: Vec<String> = names.iter().map(|n| format!("{}:{n}", oid('c'))).collect();
        assert_eq!(read("remote.ferry-creates.push"), pushes.join("\n") + "\n");
        assert_eq!(read("remote.ferry-creates.url"), format!("{url}\n"));
    }

    #[test]
    fn only_git_s_own_refusals_of_an_existing_ref_count_as_a_lost_lease() {
        for summary in [
            "[rejected] (already exists)",
            "[rejected] (fetch first)",
            "[rejected] (non-fast-forward)",
            "[rejected] (needs force)",
        ] {
            assert!(found_the_ref(summary), "{summary}");
        }
        for summary in [
            "[remote rejected] (hook declined)",
            "[remote rejected] (failed to update ref)",
            "[rejected] (stale info)",
            "[new branch]",
        ] {
            assert!(!found_the_ref(summary), "{summary}");
        }
    }

    #[test]
    fn a_create_git_fast_forwarded_is_reported_as_an_update() {
        let p = RefPlan {
            name: "refs/heads/m".into(),
            action: Action::Create,
            old: None,
            new: Some(oid('b')),
            note: None,
        };
        let status = |flag: char, summary: &str| PushStatus {
            flag,
            summary: summary.into(),
            kind: None,
        };
        let forwarded = settled_report(&p, Some(&status(' ', "a..b")), Some(&oid('b')), None);
        assert_eq!(forwarded.outcome, Some(Outcome::Updated));
        assert!(forwarded.reason.unwrap().contains("already held this ref"));
        let created = settled_report(
            &p,
            Some(&status('*', "[new branch]")),
            Some(&oid('b')),
            None,
        );
        assert_eq!(created.outcome, Some(Outcome::Created));
    }

    #[test]
    fn outcomes_come_from_what_the_destination_holds() {
        let p = RefPlan {
            name: "refs/heads/m".into(),
            action: Action::Update,
            old: Some(oid('a')),
            new: Some(oid('b')),
            note: None,
        };
        let ok = PushStatus {
            flag: ' ',
            summary: "a..b".into(),
            kind: None,
        };
        assert_eq!(
            settled_report(&p, Some(&ok), Some(&oid('b')), None).outcome,
            Some(Outcome::Updated)
        );
        // git said fine, the destination disagrees: failed, not updated.
        let r = settled_report(&p, Some(&ok), Some(&oid('a')), None);
        assert_eq!(r.outcome, Some(Outcome::Failed));
        assert!(r.reason.unwrap().contains("does not hold"));
        let rejected = PushStatus {
            flag: '!',
            summary: "[remote rejected] (hook declined)".into(),
            kind: Some(ErrorKind::Protected),
        };
        let r = settled_report(&p, Some(&rejected), Some(&oid('a')), None);
        assert_eq!(
            (r.outcome, r.kind),
            (Some(Outcome::Rejected), Some(ErrorKind::Protected))
        );
        let cut = GitFailure::new(ErrorKind::Network, "push failed: early EOF");
        let r = settled_report(&p, None, Some(&oid('a')), Some(&cut));
        assert_eq!(
            (r.outcome, r.kind),
            (Some(Outcome::Failed), Some(ErrorKind::Network))
        );
    }

    #[test]
    fn the_default_branch_is_read_from_a_symref_listing() {
        let listing =
            "ref: refs/heads/trunk\tHEAD\n0123456789012345678901234567890123456789\tHEAD\n";
        assert_eq!(default_branch(listing).as_deref(), Some("trunk"));
        assert_eq!(default_branch("0123\tHEAD\n"), None);
        assert_eq!(default_branch("ref: refs/tags/v1\tHEAD\n"), None);
    }
}

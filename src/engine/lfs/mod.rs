//! Git LFS objects travel with the refs that need them. Before a destination's refs are pushed,
//! every LFS object the new commits point to and the destination lacks is uploaded to it:
//!
//! ```text
//! refs to push ─> scan (pointers added since the values whose objects the destination has)
//!   ─> drop the objects the record says the destination has
//!   ─> destination batch "upload": objects it has come back without actions
//!   ─> the rest: from the local store, or source batch "download" into it (sha256 checked)
//!   ─> upload (+ verify) ─> refs whose objects all arrived may be pushed; the others are held
//! ```
//!
//! [`pointer`] reads pointers (pure), [`scan`] finds them in the cache's history, [`batch`]
//! speaks the batch API and [`store`] keeps downloaded objects in the cache directory. The
//! record remembers, per destination, the ref values whose history's objects are all there
//! (`tips`, where the next scan stops) and the objects known to be there.

pub mod batch;
pub mod pointer;
pub mod scan;
pub mod store;

use crate::engine::git::{Git, GitFailure};
use crate::engine::record::LfsState;
use crate::engine::report::{bytes_text, ErrorReport, LfsObjectProblem, LfsReport};
use crate::model::kind::ErrorKind;
use crate::model::mirror::{LfsMissing, LfsMode, LfsPolicy};
use crate::model::refs::{Oid, SortedLookup};
use crate::model::remote::Remote;
use batch::{Actions, Client, LfsError, Operation, BATCH_SIZE};
use futures::stream::{self, StreamExt};
use pointer::Pointer;
use scan::Found;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;
use store::ObjectStore;

/// Objects transferred at once per destination.
const PARALLEL_TRANSFERS: usize = 4;

/// What the LFS step of a destination needs from the run.
#[derive(Clone, Copy)]
pub struct Lfs<'a> {
    pub policy: LfsPolicy,
    pub source: &'a Remote,
    pub git: &'a Git,
    /// The cache's bare repository, where the new commits are.
    pub repo: &'a Path,
    pub store: &'a ObjectStore,
    pub timeout: Duration,
}

/// What the LFS step decided for a destination.
#[derive(Debug, Default)]
pub struct Carried {
    /// Whether LFS is on for this mirror at all (`lfs = false`: nothing holds a ref back).
    pub enabled: bool,
    /// Ref -> the value whose LFS objects are all on the destination: it may be pushed, and
    /// it is the record's new tip once the destination holds the value.
    pub cleared: BTreeMap<String, Oid>,
    /// Ref -> a value that may be pushed although objects the source lacks are missing
    /// (`lfs_missing = "push"`); not cleared, so the next run looks again. (Kept apart from
    /// `cleared` rather than in a second table of every allowed ref: a run can hold
    /// thousands.)
    pub dangling: BTreeMap<String, Oid>,
    /// Refs that must not be pushed, and why.
    pub held: BTreeMap<String, ErrorReport>,
    /// Objects now known to be on the destination.
    pub confirmed: Vec<String>,
    /// Absent when no pointer was involved and LFS is `auto`.
    pub report: Option<LfsReport>,
}

impl Carried {
    /// Whether the LFS step allows pushing `value` (`None`: a deletion) to `name`.
    pub fn allows(&self, name: &str, value: Option<&Oid>) -> bool {
        !self.enabled
            || value.is_none()
            || self.cleared.get(name) == value
            || self.dangling.get(name) == value
    }
}

/// Why an object did not reach the destination.
#[derive(Debug, Clone)]
enum Problem {
    /// The source's LFS server does not have it.
    Missing(String),
    /// A transfer failed.
    Failed(LfsError),
}

/// How many tips the destination's LFS objects are known at before a scan tries each moved
/// ref's own tip first (see [`scan_changes`]).
const NARROW_SCAN_TIPS: usize = 64;

/// The LFS pointers reachable from `from` (the values of the refs in `needed`) and not from
/// any of `state`'s tips (whose objects the destination has). Where each of those refs has a
/// tip of its own, its history since that tip is walked first: that walk reads a superset of
/// what the whole one reads, so when it finds no pointer (the usual commit, in a repository
/// without LFS), neither would the whole one, and a mirror with thousands of refs is spared a
/// walk that starts by reading all of their tips (nor is that list of tips made). Else the
/// whole walk answers, as before. Only past [`NARROW_SCAN_TIPS`] tips: a ref moved far from
/// its own tip (reset to another branch) makes the first walk long, which only many tips to
/// start from would outweigh.
async fn scan_changes(
    lfs: Lfs<'_>,
    needed: &BTreeMap<String, Oid>,
    state: &LfsState,
    from: &[&Oid],
) -> Result<Vec<Found>, GitFailure> {
    let own_tips: Option<BTreeSet<&Oid>> = needed.keys().map(|name| state.tips.get(name)).collect();
    if let Some(own_tips) = own_tips.filter(|_| state.tips.len() > NARROW_SCAN_TIPS) {
        let own_tips: Vec<&Oid> = own_tips.into_iter().collect();
        if scan::pointers(lfs.git, lfs.repo, from, &own_tips)
            .await?
            .is_empty()
        {
            return Ok(Vec::new());
        }
    }
    scan::pointers(lfs.git, lfs.repo, from, &all_tips(state)).await
}

/// Every tip of `state`, each value once.
fn all_tips(state: &LfsState) -> Vec<&Oid> {
    state
        .tips
        .values()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The LFS step of one destination: `wanted` are the refs (name -> value) the destination will
/// hold after the push (pushed or already there); `state` is what its record says.
pub async fn carry(
    lfs: Lfs<'_>,
    dest: &Remote,
    wanted: BTreeMap<String, Oid>,
    state: &LfsState,
) -> Carried {
    let mut carried = Carried {
        enabled: lfs.policy.mode != LfsMode::Off,
        ..Carried::default()
    };
    if !carried.enabled {
        return carried;
    }
    // `wanted` comes in name order: the tips are walked once, and each side is built from a
    // sorted list in bulk rather than one insertion at a time (10k refs).
    let mut tips = SortedLookup::new(&state.tips);
    let (done, needed): (Vec<_>, Vec<_>) = wanted
        .into_iter()
        .partition(|(name, value)| tips.get(name) == Some(value));
    carried.cleared = done.into_iter().collect();
    let needed: BTreeMap<String, Oid> = needed.into_iter().collect();
    if needed.is_empty() {
        return carried;
    }
    let from: Vec<&Oid> = needed
        .values()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let found = match scan_changes(lfs, &needed, state, &from).await {
        Ok(found) => found,
        Err(e) => {
            hold_all(
                &mut carried,
                &needed,
                e.kind,
                &format!(
                    "not pushed: the LFS objects its new commits point to could not be listed: {}",
                    e.message
                ),
            );
            carried.report = Some(LfsReport::default());
            return carried;
        }
    };
    if found.is_empty() {
        carried.cleared.extend(needed);
        carried.report = (lfs.policy.mode == LfsMode::On).then(LfsReport::default);
        return carried;
    }

    // One entry per object; several blobs can point to the same one.
    let mut objects: BTreeMap<String, (Pointer, Vec<Oid>)> = BTreeMap::new();
    for Found { blob, pointer } in found {
        objects
            .entry(pointer.oid.clone())
            .or_insert_with(|| (pointer, Vec::new()))
            .1
            .push(blob);
    }
    let mut report = LfsReport::default();
    let unknown: Vec<&Pointer> = objects
        .values()
        .map(|(p, _)| p)
        .filter(|p| !state.objects.contains(&p.oid))
        .collect();
    report.present = (objects.len() - unknown.len()) as u64;
    let problems = transfer(lfs, dest, &unknown, &mut carried.confirmed, &mut report).await;

    // Which refs the problems hold back.
    let blobs: HashSet<Oid> = problems
        .keys()
        .flat_map(|oid| objects[oid].1.iter().cloned())
        .collect();
    let holding = if blobs.is_empty() {
        BTreeMap::new()
    } else {
        match scan::refs_holding(lfs.git, lfs.repo, &needed, &all_tips(state), &blobs).await {
            Ok(holding) => holding,
            Err(e) => {
                // Cannot tell which refs need them: hold every ref that had objects to carry.
                tracing::warn!(destination = dest.display(), error = %e.message, "cannot tell which refs need the LFS objects that did not arrive");
                blobs
                    .iter()
                    .map(|b| (b.clone(), needed.keys().cloned().collect()))
                    .collect()
            }
        }
    };
    let refs_of = |oid: &str| -> Vec<String> {
        let mut refs: Vec<String> = objects[oid]
            .1
            .iter()
            .flat_map(|b| holding.get(b).cloned().unwrap_or_default())
            .collect();
        refs.sort();
        refs.dedup();
        refs
    };
    // Per ref: the first transfer failure, or else the first missing object, that holds it.
    let mut failed_refs: BTreeMap<String, ErrorReport> = BTreeMap::new();
    let mut missing_refs: BTreeMap<String, ErrorReport> = BTreeMap::new();
    for (oid, problem) in &problems {
        let p = &objects[oid].0;
        let refs = refs_of(oid);
        match problem {
            Problem::Missing(message) => {
                for r in &refs {
                    missing_refs.entry(r.clone()).or_insert_with(|| {
                        ErrorReport::new(
                            ErrorKind::LfsMissing,
                            format!(
                                "not pushed: it needs the LFS object {oid} ({}), which the source's LFS server does not have",
                                bytes_text(p.size)
                            ),
                        )
                    });
                }
                report.missing.push(LfsObjectProblem {
                    oid: oid.clone(),
                    size: p.size,
                    kind: ErrorKind::LfsMissing,
                    message: message.clone(),
                    refs,
                });
            }
            Problem::Failed(e) => {
                for r in &refs {
                    failed_refs.entry(r.clone()).or_insert_with(|| {
                        ErrorReport::new(
                            e.kind,
                            format!("not pushed: its LFS object {oid} did not reach the destination: {}", e.message),
                        )
                    });
                }
                report.failed.push(LfsObjectProblem {
                    oid: oid.clone(),
                    size: p.size,
                    kind: e.kind,
                    message: e.message.clone(),
                    refs,
                });
            }
        }
    }
    for (name, value) in needed {
        if let Some(why) = failed_refs.remove(&name) {
            carried.held.insert(name, why);
        } else if let Some(why) = missing_refs.remove(&name) {
            match lfs.policy.missing {
                LfsMissing::Hold => {
                    carried.held.insert(name, why);
                }
                // Pushed with a dangling pointer; not cleared, so the next run looks again.
                LfsMissing::Push => {
                    carried.dangling.insert(name, value);
                }
            }
        } else {
            carried.cleared.insert(name, value);
        }
    }
    carried.report = Some(report);
    carried
}

fn hold_all(carried: &mut Carried, needed: &BTreeMap<String, Oid>, kind: ErrorKind, reason: &str) {
    for name in needed.keys() {
        carried
            .held
            .insert(name.clone(), ErrorReport::new(kind, reason.to_owned()));
    }
}

/// Gets `objects` onto the destination: asks it which it lacks, fetches those from the local
/// store or the source, and uploads them. Counts what was sent in `report`, pushes what is now
/// known to be there to `confirmed`, and returns the objects that did not make it.
async fn transfer(
    lfs: Lfs<'_>,
    dest: &Remote,
    objects: &[&Pointer],
    confirmed: &mut Vec<String>,
    report: &mut LfsReport,
) -> BTreeMap<String, Problem> {
    let mut problems = BTreeMap::new();
    if objects.is_empty() {
        return problems;
    }
    let fail_all =
        |problems: &mut BTreeMap<String, Problem>, objects: &[&Pointer], e: &LfsError| {
            for p in objects {
                problems.insert(p.oid.clone(), Problem::Failed(e.clone()));
            }
        };
    let destination = match Client::new(dest, "destination", lfs.timeout) {
        Ok(c) => c,
        Err(e) => {
            fail_all(&mut problems, objects, &e);
            return problems;
        }
    };
    // Which objects the destination lacks, and where to put them.
    let mut to_send: Vec<(&Pointer, Actions)> = Vec::new();
    for chunk in objects.chunks(BATCH_SIZE) {
        let answers = match destination.batch(Operation::Upload, chunk).await {
            Ok(a) => a,
            Err(e) => {
                fail_all(&mut problems, chunk, &e);
                continue;
            }
        };
        let mut answered: BTreeMap<String, batch::ObjectAnswer> =
            answers.into_iter().map(|a| (a.oid.clone(), a)).collect();
        for p in chunk {
            match answered.remove(&p.oid) {
                None => {
                    problems.insert(
                        p.oid.clone(),
                        Problem::Failed(LfsError {
                            kind: ErrorKind::Other,
                            message: format!(
                                "the destination's LFS server did not answer for object {}",
                                p.oid
                            ),
                        }),
                    );
                }
                Some(a) => match (a.error, a.actions) {
                    (Some(err), _) => {
                        problems.insert(
                            p.oid.clone(),
                            Problem::Failed(object_error("destination", &err)),
                        );
                    }
                    (None, Some(actions)) if actions.upload.is_some() => to_send.push((p, actions)),
                    (None, _) => {
                        report.present += 1;
                        confirmed.push(p.oid.clone());
                    }
                },
            }
        }
    }
    if to_send.is_empty() {
        return problems;
    }

    // What the local store lacks comes from the source.
    let absent: Vec<&Pointer> = to_send
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !lfs.store.has(p))
        .collect();
    if !absent.is_empty() {
        download(lfs, &absent, &mut problems).await;
    }

    let mut uploads = Vec::new();
    for (p, actions) in &to_send {
        if !problems.contains_key(&p.oid) {
            uploads.push(upload_one(&destination, lfs.store, p, actions));
        }
    }
    let results: Vec<(&Pointer, Result<(), LfsError>)> = stream::iter(uploads)
        .buffer_unordered(PARALLEL_TRANSFERS)
        .collect()
        .await;
    for (p, result) in results {
        match result {
            Ok(()) => {
                report.objects += 1;
                report.bytes += p.size;
                confirmed.push(p.oid.clone());
            }
            Err(e) => {
                problems.insert(p.oid.clone(), Problem::Failed(e));
            }
        }
    }
    problems
}

/// Downloads `objects` from the source into the local store; records the ones it could not.
async fn download(lfs: Lfs<'_>, objects: &[&Pointer], problems: &mut BTreeMap<String, Problem>) {
    let source = match Client::new(lfs.source, "source", lfs.timeout) {
        Ok(c) => c,
        Err(e) => {
            for p in objects {
                problems.insert(p.oid.clone(), Problem::Failed(e.clone()));
            }
            return;
        }
    };
    let mut fetches: Vec<(&Pointer, batch::Action)> = Vec::new();
    for chunk in objects.chunks(BATCH_SIZE) {
        let answers = match source.batch(Operation::Download, chunk).await {
            Ok(a) => a,
            // Some servers (giftless) answer the whole batch with 404 when none of its objects
            // exist; others when the repository has no LFS. Either way, they cannot be had.
            Err(e) if e.kind == ErrorKind::NotFound => {
                for p in chunk {
                    problems.insert(p.oid.clone(), Problem::Missing(e.message.clone()));
                }
                continue;
            }
            Err(e) => {
                for p in chunk {
                    problems.insert(p.oid.clone(), Problem::Failed(e.clone()));
                }
                continue;
            }
        };
        let mut answered: BTreeMap<String, batch::ObjectAnswer> =
            answers.into_iter().map(|a| (a.oid.clone(), a)).collect();
        for p in chunk {
            let answer = answered.remove(&p.oid);
            let download = answer
                .as_ref()
                .and_then(|a| a.actions.as_ref())
                .and_then(|a| a.download.clone());
            match (answer.and_then(|a| a.error), download) {
                (Some(err), _) if matches!(err.code, 404 | 410) => {
                    problems.insert(
                        p.oid.clone(),
                        Problem::Missing(format!(
                            "the source's LFS server answered {}: {}",
                            err.code, err.message
                        )),
                    );
                }
                (Some(err), _) => {
                    problems.insert(p.oid.clone(), Problem::Failed(object_error("source", &err)));
                }
                (None, Some(action)) => fetches.push((p, action)),
                (None, None) => {
                    problems.insert(
                        p.oid.clone(),
                        Problem::Missing(
                            "the source's LFS server offered no download for it".into(),
                        ),
                    );
                }
            }
        }
    }
    let mut downloads = Vec::new();
    for (p, action) in &fetches {
        downloads.push(download_one(&source, lfs.store, p, action));
    }
    let results: Vec<(&Pointer, Result<(), LfsError>)> = stream::iter(downloads)
        .buffer_unordered(PARALLEL_TRANSFERS)
        .collect()
        .await;
    for (p, result) in results {
        if let Err(e) = result {
            problems.insert(p.oid.clone(), Problem::Failed(e));
        }
    }
}

async fn upload_one<'a>(
    destination: &Client,
    store: &ObjectStore,
    p: &'a Pointer,
    actions: &Actions,
) -> (&'a Pointer, Result<(), LfsError>) {
    let result = match &actions.upload {
        Some(upload) => {
            destination
                .upload(store, p, upload, actions.verify.as_ref())
                .await
        }
        None => Ok(()),
    };
    (p, result)
}

async fn download_one<'a>(
    source: &Client,
    store: &ObjectStore,
    p: &'a Pointer,
    action: &batch::Action,
) -> (&'a Pointer, Result<(), LfsError>) {
    (p, source.download(store, p, action).await)
}

/// An object's error in a batch answer, as a failure.
fn object_error(role: &str, err: &batch::ObjectError) -> LfsError {
    let kind = match err.code {
        401 => ErrorKind::Auth,
        403 => ErrorKind::Permission,
        404 | 410 => ErrorKind::NotFound,
        413 => ErrorKind::TooLarge,
        429 | 500..=599 => ErrorKind::Network,
        _ => ErrorKind::Other,
    };
    let message: String = err
        .message
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    LfsError {
        kind,
        message: format!(
            "the {role}'s LFS server refused it ({}: {})",
            err.code,
            crate::model::remote::redact_text(&message)
        ),
    }
}

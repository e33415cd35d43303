//! Which LFS pointers a push adds: the small blobs of the commits between the refs' new values
//! and the values whose LFS objects the destination already has, read from the cache. Only the
//! change is walked, so the cost follows the change, not the repository.

use crate::engine::git::{Git, GitFailure, Session};
use crate::engine::lfs::pointer::{self, Pointer, MAX_POINTER_SIZE};
use crate::model::kind::ErrorKind;
use crate::model::refs::Oid;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Requests written to `cat-file` before its answers are read: small enough that the requests
/// never fill the pipe while git waits for its answers to be read.
const CAT_FILE_WINDOW: usize = 256;

/// No pointer is smaller: the shortest version line, an oid line and `size 0`.
const MIN_POINTER_SIZE: u64 = 100;

/// A pointer found in the history, and the blob that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub blob: Oid,
    pub pointer: Pointer,
}

/// The LFS pointers in the history reachable from `from` and not from `stop`, each blob once.
/// `stop` may name commits the cache no longer has (they are ignored; more is scanned).
pub async fn pointers(
    git: &Git,
    repo: &Path,
    from: &[&Oid],
    stop: &[&Oid],
) -> Result<Vec<Found>, GitFailure> {
    let candidates = match small_blobs(git, repo, from, stop).await? {
        Some(blobs) => blobs,
        None => {
            let objects = small_objects(git, repo, from, stop).await?;
            pointer_sized_blobs(git, repo, &objects).await?
        }
    };
    read_pointers(git, repo, &candidates).await
}

/// For each blob in `blobs`, the names of the refs (of `refs`, name -> value) whose history
/// beyond `stop` holds it. One walk per ref: only for a run that has to say which refs an
/// object it could not transfer holds back.
pub async fn refs_holding(
    git: &Git,
    repo: &Path,
    refs: &BTreeMap<String, Oid>,
    stop: &[&Oid],
    blobs: &HashSet<Oid>,
) -> Result<BTreeMap<Oid, Vec<String>>, GitFailure> {
    let mut holding: BTreeMap<Oid, Vec<String>> = BTreeMap::new();
    for (name, value) in refs {
        if refs.len() == 1 {
            // The only ref: it holds every blob the scan found.
            for blob in blobs {
                holding.entry(blob.clone()).or_default().push(name.clone());
            }
            break;
        }
        for object in small_objects(git, repo, &[value], stop).await? {
            if blobs.contains(&object) {
                holding.entry(object).or_default().push(name.clone());
            }
        }
    }
    Ok(holding)
}

/// Set once git refused the filter by object type (git before 2.32).
static NO_TYPE_FILTER: AtomicBool = AtomicBool::new(false);

/// The blobs small enough to be pointers reachable from `from` and not from `stop`, from one
/// `rev-list` filtered by size and type: the usual commit adds no such blob, and then nothing
/// else is read. `None` when this git cannot filter by type (see [`small_objects`]).
async fn small_blobs(
    git: &Git,
    repo: &Path,
    from: &[&Oid],
    stop: &[&Oid],
) -> Result<Option<Vec<Oid>>, GitFailure> {
    if NO_TYPE_FILTER.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let size = format!("--filter=blob:limit={}", MAX_POINTER_SIZE + 1);
    let args = [
        "rev-list",
        "--objects",
        &size,
        "--filter=object:type=blob",
        "--ignore-missing",
        "--stdin",
    ];
    match walk(git, repo, &args, from, stop).await {
        // The filter does not apply to commits; unlike a blob, a commit has no path after it.
        Ok(lines) => Ok(Some(
            lines
                .iter()
                .filter_map(|line| line.split_once(' '))
                .filter_map(|(oid, _path)| Oid::parse(oid))
                .collect(),
        )),
        Err(e) if e.message.contains("object:type") || e.message.contains("filter-spec") => {
            NO_TYPE_FILTER.store(true, Ordering::Relaxed);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The commits, trees and the blobs small enough to be pointers reachable from `from` and not
/// from `stop` (`rev-list --objects` without large blobs), for a git that cannot filter by
/// object type: `pointer_sized_blobs` sorts them.
async fn small_objects(
    git: &Git,
    repo: &Path,
    from: &[&Oid],
    stop: &[&Oid],
) -> Result<Vec<Oid>, GitFailure> {
    let filter = format!("--filter=blob:limit={}", MAX_POINTER_SIZE + 1);
    let args = [
        "rev-list",
        "--objects",
        "--no-object-names",
        &filter,
        "--ignore-missing",
        "--stdin",
    ];
    let lines = walk(git, repo, &args, from, stop).await?;
    Ok(lines.iter().filter_map(|l| Oid::parse(l.trim())).collect())
}

/// Runs the `rev-list ... --stdin` of `args` over `from` and not `stop` (revisions through
/// stdin, so any number of refs fits); its output lines.
async fn walk(
    git: &Git,
    repo: &Path,
    args: &[&str],
    from: &[&Oid],
    stop: &[&Oid],
) -> Result<Vec<String>, GitFailure> {
    let mut session = git.session(repo, args)?;
    for oid in from {
        session.send(oid.as_str()).await?;
    }
    for oid in stop {
        session.send(&format!("^{oid}")).await?;
    }
    session.close_input();
    let mut lines = Vec::new();
    while let Some(line) = session.read_line().await? {
        lines.push(line.trim_end().to_owned());
    }
    let out = session.finish().await?;
    if !out.success {
        return Err(GitFailure::new(
            ErrorKind::Other,
            format!(
                "listing the new commits' objects in the cache failed: {}",
                out.stderr.trim()
            ),
        ));
    }
    Ok(lines)
}

/// The blobs of `objects` whose size a pointer can have (one `cat-file --batch-check`).
async fn pointer_sized_blobs(
    git: &Git,
    repo: &Path,
    objects: &[Oid],
) -> Result<Vec<Oid>, GitFailure> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let mut session = git.session(repo, &["cat-file", "--batch-check"])?;
    let mut blobs = Vec::new();
    for window in objects.chunks(CAT_FILE_WINDOW) {
        for oid in window {
            session.send(oid.as_str()).await?;
        }
        for _ in window {
            let Some(line) = session.read_line().await? else {
                return Err(GitFailure::new(
                    ErrorKind::Other,
                    "git cat-file stopped answering",
                ));
            };
            // "<oid> <type> <size>", or "<request> missing".
            let mut words = line.split(' ');
            if let (Some(id), Some("blob"), Some(size)) = (words.next(), words.next(), words.next())
            {
                let fits = size
                    .parse::<u64>()
                    .is_ok_and(|n| (MIN_POINTER_SIZE..=MAX_POINTER_SIZE).contains(&n));
                if let Some(oid) = Oid::parse(id).filter(|_| fits) {
                    blobs.push(oid);
                }
            }
        }
    }
    session.finish().await?;
    Ok(blobs)
}

/// Reads `objects` through one `cat-file --batch` and keeps the blobs that are pointers.
async fn read_pointers(git: &Git, repo: &Path, objects: &[Oid]) -> Result<Vec<Found>, GitFailure> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    // A fetch of a few commits leaves their objects loose: those are read here, without a
    // process; packed ones go to git.
    let mut packed = Vec::new();
    for oid in objects {
        match loose_blob(repo, oid) {
            Some(body) => {
                if let Some(pointer) = pointer::parse(&body) {
                    if seen.insert(pointer.oid.clone()) {
                        found.push(Found {
                            blob: oid.clone(),
                            pointer,
                        });
                    }
                }
            }
            None => packed.push(oid.clone()),
        }
    }
    if packed.is_empty() {
        return Ok(found);
    }
    let mut session = git.session(repo, &["cat-file", "--batch"])?;
    for window in packed.chunks(CAT_FILE_WINDOW) {
        for oid in window {
            session.send(oid.as_str()).await?;
        }
        for _ in window {
            if let Some(hit) = read_one(&mut session).await? {
                if seen.insert(hit.pointer.oid.clone()) {
                    found.push(hit);
                }
            }
        }
    }
    session.finish().await?;
    Ok(found)
}

/// The content of blob `oid` when it is a loose object of `repo` no larger than a pointer can
/// be (`objects/xx/yyyy...`: zlib over `blob <size>\0<content>`); `None` when it is not
/// loose, not a blob, too large or unreadable (git reads it then, and reports any damage).
fn loose_blob(repo: &Path, oid: &Oid) -> Option<Vec<u8>> {
    use std::io::Read;
    let hex = oid.as_str();
    let file = std::fs::File::open(repo.join("objects").join(&hex[..2]).join(&hex[2..])).ok()?;
    let limit = MAX_POINTER_SIZE + 32;
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(file)
        .take(limit)
        .read_to_end(&mut raw)
        .ok()?;
    let nul = raw.iter().position(|&b| b == 0)?;
    let size: usize = std::str::from_utf8(raw[..nul].strip_prefix(b"blob ")?)
        .ok()?
        .parse()
        .ok()?;
    let body = raw.get(nul + 1..)?;
    (body.len() == size).then(|| body.to_vec())
}

/// One answer of `cat-file --batch`: a pointer, or `None` for anything else.
async fn read_one(session: &mut Session) -> Result<Option<Found>, GitFailure> {
    let Some(object) = session.read_object().await? else {
        return Ok(None);
    };
    if object.kind != "blob" {
        return Ok(None);
    }
    Ok(Oid::parse(&object.id)
        .zip(pointer::parse(&object.body))
        .map(|(blob, pointer)| Found { blob, pointer }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(repo: &Path, args: &[&str], input: Option<&str>) -> String {
        crate::engine::test_git(repo, args, input).trim().to_owned()
    }

    #[test]
    fn a_loose_blob_is_read_without_git_and_a_packed_one_is_left_to_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path();
        git(repo, &["init", "-q", "--bare", "."], None);
        let pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n";
        let small =
            Oid::parse(&git(repo, &["hash-object", "-w", "--stdin"], Some(pointer))).expect("oid");
        let large = Oid::parse(&git(
            repo,
            &["hash-object", "-w", "--stdin"],
            Some(&"x".repeat(5000)),
        ))
        .expect("oid");
        assert_eq!(
            loose_blob(repo, &small).as_deref(),
            Some(pointer.as_bytes())
        );
        assert_eq!(loose_blob(repo, &large), None, "larger than any pointer");
        let tree = git(
            repo,
            &["mktree"],
            Some(&format!("100644 blob {small}\tpointer.bin\n")),
        );
        let tree = Oid::parse(&tree).expect("oid");
        assert_eq!(loose_blob(repo, &tree), None, "not a blob");
        git(
            repo,
            &[
                "update-ref",
                "refs/heads/keep",
                &git(repo, &["commit-tree", &tree.to_string(), "-m", "x"], None),
            ],
            None,
        );
        git(repo, &["repack", "-adq"], None);
        git(repo, &["prune-packed"], None);
        assert_eq!(loose_blob(repo, &small), None, "packed now");
    }
}

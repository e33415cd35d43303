//! What each destination held after ferry's last sync, per ref. This is how ferry tells a
//! legitimate upstream force-push (the destination still holds what ferry pushed) from an
//! out-of-band change (it holds something ferry never pushed), and which deleted branches it
//! may prune.
//!
//! A record lives in a [`RecordStore`]: one small JSON document per (source, destination, ref
//! selection), read with a version token and written only if that version is still current.
//! [`FileStore`] keeps them beside the cache (the CLI, the service); the Lambda front end
//! plugs in one that survives cold starts. A write that loses to another writer is not
//! retried blindly: [`Record::save`] reads the record again, re-applies this run's changes
//! (the refs whose entry it changed) on top, and saves that, so neither writer's entries are
//! clobbered.

use crate::engine::cache::CachePaths;
use crate::model::mirror::short_hash;
use crate::model::refs::{Oid, RefMap, RefPattern, RefSelection};
use crate::model::remote::Remote;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fs;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

/// How many times a save that lost to another writer is merged and tried again.
const SAVE_ATTEMPTS: usize = 5;

/// Which record: the one of this destination of this source for this ref selection.
#[derive(Debug, Clone, Copy)]
pub struct RecordKey<'a> {
    pub source: &'a Remote,
    pub destination: &'a Remote,
    pub selection: &'a RefSelection,
}

impl RecordKey<'_> {
    /// A stable id of the ref selection (its patterns, in order).
    pub fn selection_id(&self) -> String {
        short_hash(self.selection.key())
    }
}

/// The version of a record a store handed out, which a save must still find to succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// There was no record: create it only if there still is none.
    Absent,
    /// The store's token for what was read (an ETag, a file's inode, size and time).
    Tag(String),
}

/// What a record says about a destination's Git LFS objects. Records written before ferry
/// carried LFS objects have none of it, which makes the next run with LFS scan the whole
/// history of every ref once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsState {
    /// Ref -> the value whose history's LFS objects are all on the destination: a scan for
    /// what a push needs starts from the new value and stops at these.
    #[serde(
        default,
        skip_serializing_if = "RefMap::is_empty",
        deserialize_with = "ref_map"
    )]
    pub tips: RefMap,
    /// The LFS objects (sha256 hex) known to be on the destination: ferry uploaded them or
    /// the server said it had them. A scan that finds one again does not ask for it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub objects: BTreeSet<String>,
}

impl LfsState {
    pub fn is_empty(&self) -> bool {
        self.tips.is_empty() && self.objects.is_empty()
    }
}

/// A record as a store holds it.
#[derive(Debug)]
pub struct Stored {
    pub refs: RefMap,
    pub lfs: LfsState,
    pub version: Version,
    /// The record's settled stamp, when it has one (see [`Record::settle`]).
    pub settled: Option<String>,
}

/// What a conditional save did.
#[derive(Debug)]
pub enum Written {
    /// Saved; this is the new version.
    Saved(Version),
    /// Someone else wrote the record since the expected version was read; nothing was written.
    Conflict,
}

/// A record store's failure, in words that name no secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where records live. `load` answers an absent record with empty refs and
/// [`Version::Absent`]; `save` writes only if the record is still at `expected`.
///
/// A record can carry a settled stamp (see [`Record::settle`]), saved with it and read on its
/// own by `settled`, without reading the record: a no-op run needs nothing else. A store makes
/// sure a stamp never outlives the record it was saved with: a record written without one (by
/// anyone) has none.
pub trait RecordStore: Send + Sync {
    fn load<'a>(&'a self, key: RecordKey<'a>) -> StoreFuture<'a, Stored>;
    /// The stamp of the record as it is now; `None` when it has none or there is no record.
    fn settled<'a>(&'a self, key: RecordKey<'a>) -> StoreFuture<'a, Option<String>>;
    /// Whether `settled` costs next to nothing beside `load` (a small local file): then a run
    /// whose source is still being listed reads the stamp first, and the record only when the
    /// listing does not match it. Where the stamp is a request of its own (S3), it comes with
    /// the record's one read instead.
    fn settled_alone_is_cheap(&self) -> bool {
        false
    }
    fn save<'a>(
        &'a self,
        key: RecordKey<'a>,
        contents: Contents<'a>,
        expected: &'a Version,
    ) -> StoreFuture<'a, Written>;
}

/// What a record holds, as a store writes it.
#[derive(Debug, Clone, Copy)]
pub struct Contents<'a> {
    pub refs: &'a RefMap,
    pub lfs: &'a LfsState,
    pub settled: Option<&'a str>,
}

/// A record as stored: the refs, plus what it is the record of, for people inspecting it.
/// Written from borrowed tables (a record can hold thousands of refs), read into owned ones.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Document<'a> {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    source: String,
    /// The destination's credential-free URL.
    #[serde(default)]
    destination: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<String>,
    #[serde(deserialize_with = "owned_ref_map")]
    refs: Cow<'a, RefMap>,
    #[serde(default, skip_serializing_if = "no_lfs")]
    lfs: Cow<'a, LfsState>,
}

/// Reads a JSON object of ref names and ids into a map built in one pass from its sorted
/// entries, where serde would insert them one by one: a record holds up to thousands of refs,
/// read on every run (an event's no-op spends most of its time here), and ferry writes them
/// sorted, so the sort only checks the order. A repeated name keeps its last id, as an insert
/// would.
fn ref_map<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<RefMap, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = RefMap;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of ref names to object ids")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RefMap, A::Error> {
            let mut entries: Vec<(String, Oid)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some(entry) = map.next_entry()? {
                entries.push(entry);
            }
            Ok(entries.into_iter().collect())
        }
    }
    deserializer.deserialize_map(Entries)
}

fn owned_ref_map<'de, 'a, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Cow<'a, RefMap>, D::Error> {
    ref_map(deserializer).map(Cow::Owned)
}

// serde's `skip_serializing_if` hands over a reference to the field itself.
#[allow(clippy::ptr_arg)]
fn no_lfs(lfs: &Cow<'_, LfsState>) -> bool {
    lfs.is_empty()
}

/// The stored form of a record (JSON).
pub fn encode(key: RecordKey<'_>, contents: Contents<'_>) -> Result<Vec<u8>, StoreError> {
    let patterns = |ps: &[RefPattern]| ps.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>();
    let doc = Document {
        source: key.source.identity().to_owned(),
        destination: key.destination.identity().to_owned(),
        include: patterns(&key.selection.include),
        exclude: patterns(&key.selection.exclude),
        refs: Cow::Borrowed(contents.refs),
        lfs: Cow::Borrowed(contents.lfs),
    };
    serde_json::to_vec_pretty(&doc)
        .map_err(|e| StoreError(format!("cannot encode a sync record: {e}")))
}

/// The refs and LFS state of a stored record. An unreadable one counts as empty (first-sync
/// rules apply, which never lose destination commits) and is reported in the log; its next
/// save replaces it.
pub fn decode(bytes: &[u8], location: &str) -> (RefMap, LfsState) {
    match serde_json::from_slice::<Document>(bytes) {
        Ok(doc) => (doc.refs.into_owned(), doc.lfs.into_owned()),
        Err(e) => {
            tracing::warn!(record = location, error = %e, "ignoring an unreadable sync record; treating this as a first sync");
            (RefMap::new(), LfsState::default())
        }
    }
}

/// The record of one destination, as this run sees and changes it.
///
/// `refs` and `lfs` start out sharing their tables with the loaded copy and are copied on
/// their first change (`Arc::make_mut`): a run that changes nothing (a no-op, an event whose
/// ref already matches) never copies a table of thousands of refs.
#[derive(Debug)]
pub struct Record {
    pub refs: Arc<RefMap>,
    pub lfs: Arc<LfsState>,
    /// As loaded: what this run changed is the difference, and an unchanged record is not
    /// rewritten on every no-op sync.
    loaded: Arc<RefMap>,
    loaded_lfs: Arc<LfsState>,
    version: Version,
    /// The settled stamp as loaded, and what this run says of it (see [`Record::settle`]).
    loaded_settled: Option<String>,
    settled: Settle,
}

/// What a run says of its record's settled stamp.
#[derive(Debug)]
enum Settle {
    /// Nothing: the loaded stamp stays while the record is unchanged, and goes with any change
    /// (a focused run, which sees only some of the source's refs, cannot tell).
    Unsaid,
    /// This stamp (`None`: not settled).
    To(Option<String>),
}

impl Record {
    pub async fn load(store: &dyn RecordStore, key: RecordKey<'_>) -> Result<Record, StoreError> {
        let stored = store.load(key).await?;
        Ok(Record::from_stored(stored))
    }

    fn from_stored(stored: Stored) -> Record {
        let (refs, lfs) = (Arc::new(stored.refs), Arc::new(stored.lfs));
        Record {
            refs: Arc::clone(&refs),
            lfs: Arc::clone(&lfs),
            loaded: refs,
            loaded_lfs: lfs,
            version: stored.version,
            loaded_settled: stored.settled,
            settled: Settle::Unsaid,
        }
    }

    /// Whether the refs and LFS state are as loaded (shared tables are unchanged without a
    /// comparison).
    fn tables_unchanged(&self) -> bool {
        (Arc::ptr_eq(&self.refs, &self.loaded) || self.refs == self.loaded)
            && (Arc::ptr_eq(&self.lfs, &self.loaded_lfs) || self.lfs == self.loaded_lfs)
    }

    /// Whether this run changed nothing, the settled stamp included.
    fn unchanged(&self) -> bool {
        self.tables_unchanged() && self.stamp() == self.loaded_settled.as_deref()
    }

    /// Marks the record as settled: `stamp` says that its refs are exactly the source's refs
    /// of a listing, and, with LFS on, that every ref's LFS objects are on the destination
    /// (the sync engine makes the stamp from the listing's digest and the LFS policy). A later
    /// sync planning from this record whose source lists the same refs has nothing to do,
    /// which it can tell from the stamp alone ([`RecordStore::settled`]) without reading the
    /// record. `None`: not settled.
    pub fn settle(&mut self, stamp: Option<String>) {
        self.settled = Settle::To(stamp);
    }

    /// The settled stamp the record was loaded with.
    pub fn settled_as_loaded(&self) -> Option<&str> {
        self.loaded_settled.as_deref()
    }

    /// The stamp to save with the record as it is now.
    fn stamp(&self) -> Option<&str> {
        match &self.settled {
            Settle::To(stamp) => stamp.as_deref(),
            Settle::Unsaid if self.tables_unchanged() => self.loaded_settled.as_deref(),
            Settle::Unsaid => None,
        }
    }

    /// The refs to plan against: a record's `refs`, and for refs it has no entry for,
    /// `assumed` (borrowed when that adds nothing: a record can hold thousands of refs; and
    /// of the refs alone, so the rest of the record stays free to change).
    pub fn with_assumed<'r>(refs: &'r RefMap, assumed: &RefMap) -> Cow<'r, RefMap> {
        if assumed.keys().all(|name| refs.contains_key(name)) {
            return Cow::Borrowed(refs);
        }
        let mut known = refs.clone();
        for (name, oid) in assumed {
            known.entry(name.clone()).or_insert_with(|| oid.clone());
        }
        Cow::Owned(known)
    }

    /// Saves the record if it changed (or was never stored). When another writer saved it
    /// since it was loaded, reads it again, re-applies this run's changes on top and tries
    /// again, a few times. The record is done with then: it is not kept in step with what
    /// was written (a record can hold thousands of refs), and the caller drops it where that
    /// costs the run nothing (see `engine::sync::free_aside`).
    pub async fn save(
        &mut self,
        store: &dyn RecordStore,
        key: RecordKey<'_>,
    ) -> Result<(), StoreError> {
        if self.unchanged() && self.version != Version::Absent {
            return Ok(());
        }
        let ref_changes = changes(&self.loaded, &self.refs);
        let tip_changes = changes(&self.loaded_lfs.tips, &self.lfs.tips);
        let new_objects: Vec<String> = self
            .lfs
            .objects
            .difference(&self.loaded_lfs.objects)
            .cloned()
            .collect();
        for _ in 0..SAVE_ATTEMPTS {
            if self.unchanged() && self.version != Version::Absent {
                return Ok(());
            }
            let contents = Contents {
                refs: &self.refs,
                lfs: &self.lfs,
                settled: self.stamp(),
            };
            match store.save(key, contents, &self.version).await? {
                Written::Saved(_) => return Ok(()),
                Written::Conflict => {
                    tracing::info!(
                        destination = key.destination.display(),
                        "the sync record changed since this run read it; merging this run's changes into it"
                    );
                    let fresh = store.load(key).await?;
                    self.refs = Arc::new(reapplied(&fresh.refs, &ref_changes));
                    // Objects are only ever added: the other writer's and this run's.
                    let mut lfs = LfsState {
                        tips: reapplied(&fresh.lfs.tips, &tip_changes),
                        objects: fresh.lfs.objects.clone(),
                    };
                    lfs.objects.extend(new_objects.iter().cloned());
                    self.lfs = Arc::new(lfs);
                    self.loaded = Arc::new(fresh.refs);
                    self.loaded_lfs = Arc::new(fresh.lfs);
                    self.version = fresh.version;
                    // The merge is not what this run saw the destination settle at: the other
                    // writer's stamp stays only if the merge changes nothing of its record.
                    self.loaded_settled = fresh.settled;
                    self.settled = Settle::Unsaid;
                }
            }
        }
        Err(StoreError(format!(
            "another writer kept changing the sync record while this run saved it ({SAVE_ATTEMPTS} attempts)"
        )))
    }
}

/// `base` with `changes` applied on top.
fn reapplied(base: &RefMap, changes: &[(String, Option<Oid>)]) -> RefMap {
    let mut merged = base.clone();
    for (name, value) in changes {
        match value {
            Some(oid) => merged.insert(name.clone(), oid.clone()),
            None => merged.remove(name),
        };
    }
    merged
}

/// The entries `after` changed against `before`: a new value, or `None` for a removed entry.
fn changes(before: &RefMap, after: &RefMap) -> Vec<(String, Option<Oid>)> {
    // One walk over both (sorted) maps: thousands of refs, few of them changed.
    let mut out = Vec::new();
    let (mut old, mut new) = (before.iter().peekable(), after.iter().peekable());
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some((name, _)), None) => {
                out.push(((*name).clone(), None));
                old.next();
            }
            (None, Some((name, oid))) => {
                out.push(((*name).clone(), Some((*oid).clone())));
                new.next();
            }
            (Some((a, was)), Some((b, is))) => match a.cmp(b) {
                std::cmp::Ordering::Less => {
                    out.push(((*a).clone(), None));
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(((*b).clone(), Some((*is).clone())));
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if was != is {
                        out.push(((*b).clone(), Some((*is).clone())));
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
    out
}

/// Records as JSON files beside the cache, one directory per source and one file per
/// destination (named by its hash; the ref selection is not part of the name, so records
/// written before selections were keyed stay valid). Writes are atomic (temporary file,
/// fsync, rename). The version is the file's [`FileStore::mark`], which every write changes,
/// checked before writing (a look at the file's metadata: a record of 10,000 refs is not read
/// and hashed again to be saved); the cache's lock, held for the whole run, keeps other ferry
/// processes out between the check and the rename.
pub struct FileStore {
    cache_root: PathBuf,
}

/// A record file as read: its bytes and its [`FileStore::mark`].
struct RecordFile {
    bytes: Vec<u8>,
    mark: String,
}

impl FileStore {
    pub fn new(cache_root: &Path) -> FileStore {
        FileStore {
            cache_root: cache_root.to_owned(),
        }
    }

    fn path(&self, key: RecordKey<'_>) -> PathBuf {
        let destination = key.destination.identity();
        // Two mirrors that differ only in their selection push different refs, so they keep
        // separate records. The default selection keeps the name records had before
        // selections were part of the key, so existing records stay valid.
        let id = if *key.selection == RefSelection::default() {
            short_hash(destination)
        } else {
            short_hash(format!("{destination}\n{}", key.selection.key()))
        };
        CachePaths::new(&self.cache_root, key.source)
            .records
            .join(format!("{id}.json"))
    }

    /// The record file; `None` when there is none.
    fn read(path: &Path) -> Result<Option<RecordFile>, StoreError> {
        let failed = |e: std::io::Error| {
            StoreError(format!(
                "cannot read the sync record {}: {e}",
                path.display()
            ))
        };
        let mut file = match fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        let meta = file.metadata().map_err(failed)?;
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes).map_err(failed)?;
        Ok(Some(RecordFile {
            mark: FileStore::mark(&meta),
            bytes,
        }))
    }

    /// Where the record at `path` keeps its settled stamp: a file of its own, so that a no-op
    /// run reads a line instead of the record.
    fn stamp_path(path: &Path) -> PathBuf {
        path.with_extension("settled")
    }

    /// What a stamp is bound to: the record file's inode, length and modification time, which
    /// every write of the record changes (it renames a new file into place), whoever writes
    /// it. A stamp whose mark is not the record's is stale and counts as none; a save that
    /// finds another mark than the one it loaded lost to another writer.
    fn mark(meta: &fs::Metadata) -> String {
        use std::os::unix::fs::MetadataExt;
        // Nanoseconds since the epoch, as stamps written by earlier versions have them.
        let modified = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        format!("{} {} {modified}", meta.ino(), meta.len())
    }

    /// The stamp of the record whose mark is `mark`.
    fn read_stamp(path: &Path, mark: &str) -> Option<String> {
        let text = fs::read_to_string(FileStore::stamp_path(path)).ok()?;
        let (stamp, stamped) = text.trim_end().split_once(' ')?;
        (stamped == mark).then(|| stamp.to_owned())
    }

    /// Binds `stamp` to the record just written at `path` with `mark` (or removes the stamp).
    /// Not synced to disk: a stamp lost or torn in a crash reads as none, which costs one full
    /// run.
    fn write_stamp(path: &Path, mark: &str, stamp: Option<&str>) -> std::io::Result<()> {
        let stamp_path = FileStore::stamp_path(path);
        match stamp {
            Some(stamp) => {
                let dir = stamp_path.parent().unwrap_or(Path::new("."));
                let mut file = FileStore::file_beside(dir)?;
                file.write_all(format!("{stamp} {mark}\n").as_bytes())?;
                file.persist(&stamp_path).map(drop).map_err(|e| e.error)
            }
            None => match fs::remove_file(&stamp_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// The record's version: its mark, or [`Version::Absent`] when there is no record.
    fn version(path: &Path) -> Result<Version, StoreError> {
        match fs::metadata(path) {
            Ok(meta) => Ok(Version::Tag(FileStore::mark(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Version::Absent),
            Err(e) => Err(StoreError(format!(
                "cannot read the sync record {}: {e}",
                path.display()
            ))),
        }
    }

    /// A new file in `dir`, to be renamed into place: made as `File::create` would make it
    /// (0666 less the umask; tempfile's own default is 0600), so that a record keeps the mode
    /// records always had.
    fn file_beside(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
        use std::os::unix::fs::PermissionsExt;
        tempfile::Builder::new()
            .permissions(fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
    }

    /// Writes the record file and returns its mark, taken from the written file (a rename
    /// keeps its inode, size and time), so that neither the new version nor the stamp needs
    /// another look at the file.
    fn write(path: &Path, bytes: &[u8]) -> std::io::Result<String> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        // Written beside it under a name of its own and renamed over it: a reader sees the
        // old record or the new one, never half of one. A failed write removes its file.
        let mut file = FileStore::file_beside(dir)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        let mark = FileStore::mark(&file.as_file().metadata()?);
        file.persist(path).map_err(|e| e.error)?;
        Ok(mark)
    }
}

impl RecordStore for FileStore {
    fn load<'a>(&'a self, key: RecordKey<'a>) -> StoreFuture<'a, Stored> {
        Box::pin(async move {
            let path = self.path(key);
            let Some(RecordFile { bytes, mark }) = FileStore::read(&path)? else {
                return Ok(Stored {
                    refs: RefMap::new(),
                    lfs: LfsState::default(),
                    version: Version::Absent,
                    settled: None,
                });
            };
            let (refs, lfs) = decode(&bytes, &path.display().to_string());
            Ok(Stored {
                refs,
                lfs,
                version: Version::Tag(mark.clone()),
                settled: FileStore::read_stamp(&path, &mark),
            })
        })
    }

    fn settled<'a>(&'a self, key: RecordKey<'a>) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let path = self.path(key);
            Ok(fs::metadata(&path)
                .ok()
                .and_then(|meta| FileStore::read_stamp(&path, &FileStore::mark(&meta))))
        })
    }

    fn settled_alone_is_cheap(&self) -> bool {
        true
    }

    fn save<'a>(
        &'a self,
        key: RecordKey<'a>,
        contents: Contents<'a>,
        expected: &'a Version,
    ) -> StoreFuture<'a, Written> {
        Box::pin(async move {
            let path = self.path(key);
            if FileStore::version(&path)? != *expected {
                return Ok(Written::Conflict);
            }
            let bytes = encode(key, contents)?;
            let failed = |e: std::io::Error| {
                StoreError(format!(
                    "cannot write the sync record {}: {e}",
                    path.display()
                ))
            };
            let mark = FileStore::write(&path, &bytes).map_err(failed)?;
            // A stamp left behind is bound to the record it was written with, so a stamp that
            // cannot be written costs the next no-op its shortcut, nothing else.
            if let Err(e) = FileStore::write_stamp(&path, &mark, contents.settled) {
                tracing::warn!(record = %path.display(), error = %e, "cannot write the sync record's settled stamp; the next sync reads the record");
            }
            Ok(Written::Saved(Version::Tag(mark)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(c: char) -> Oid {
        Oid::parse(&c.to_string().repeat(40)).unwrap()
    }

    fn remote(url: &str) -> Remote {
        Remote::parse(url, Path::new("/")).unwrap()
    }

    /// A file store's directory and the key of one record in it.
    struct Fixture {
        dir: tempfile::TempDir,
        source: Remote,
        destination: Remote,
        selection: RefSelection,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
                source: remote("https://h/src.git"),
                destination: remote("https://h/r.git"),
                selection: RefSelection::default(),
            }
        }

        /// A store over the fixture's directory (a file store is only its path).
        fn store(&self) -> FileStore {
            FileStore::new(self.dir.path())
        }

        fn key(&self) -> RecordKey<'_> {
            RecordKey {
                source: &self.source,
                destination: &self.destination,
                selection: &self.selection,
            }
        }
    }

    #[test]
    fn a_record_s_refs_are_read_in_any_order_and_a_repeated_name_keeps_its_last_id() {
        let (a, b, c) = ("a".repeat(40), "b".repeat(40), "c".repeat(40));
        let json = format!(
            r#"{{"destination":"d","refs":{{"refs/heads/z":"{a}","refs/heads/m":"{b}","refs/heads/z":"{c}"}},
               "lfs":{{"tips":{{"refs/heads/z":"{b}","refs/heads/a":"{a}"}}}}}}"#
        );
        let (refs, lfs) = decode(json.as_bytes(), "test");
        let expected: RefMap = [("refs/heads/m", 'b'), ("refs/heads/z", 'c')]
            .iter()
            .map(|(n, c)| ((*n).to_owned(), oid(*c)))
            .collect();
        assert_eq!(refs, expected);
        assert_eq!(lfs.tips.len(), 2);
        assert_eq!(lfs.tips["refs/heads/a"], oid('a'));
        // Not a map: an unreadable record, which counts as empty.
        let (refs, _) = decode(br#"{"refs":["refs/heads/x"]}"#, "test");
        assert!(refs.is_empty());
    }

    #[test]
    fn changes_name_every_entry_added_moved_or_removed() {
        let map = |entries: &[(&str, char)]| -> RefMap {
            entries
                .iter()
                .map(|(n, c)| ((*n).to_owned(), oid(*c)))
                .collect()
        };
        let before = map(&[("a", '1'), ("b", '2'), ("c", '3'), ("e", '6')]);
        let after = map(&[("b", '2'), ("c", '4'), ("d", '5')]);
        assert_eq!(
            changes(&before, &after),
            vec![
                ("a".to_owned(), None),
                ("c".to_owned(), Some(oid('4'))),
                ("d".to_owned(), Some(oid('5'))),
                ("e".to_owned(), None),
            ]
        );
        assert!(changes(&after, &after).is_empty());
    }

    #[tokio::test]
    async fn round_trips_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let (src, dst, other) = (
            remote("https://h/src.git"),
            remote("https://h/r.git"),
            remote("https://h/other.git"),
        );
        let selection = RefSelection::default();
        let key = RecordKey {
            source: &src,
            destination: &dst,
            selection: &selection,
        };
        let mut r = Record::load(&store, key).await.unwrap();
        assert!(r.refs.is_empty());
        Arc::make_mut(&mut r.refs).insert("refs/heads/main".into(), oid('a'));
        let saved = r.refs.clone();
        r.save(&store, key).await.unwrap();
        let again = Record::load(&store, key).await.unwrap();
        assert_eq!(again.refs, saved);
        fs::write(store.path(key), b"{not json").unwrap();
        assert!(Record::load(&store, key).await.unwrap().refs.is_empty());
        let other = RecordKey {
            destination: &other,
            ..key
        };
        assert!(Record::load(&store, other).await.unwrap().refs.is_empty());
    }

    #[tokio::test]
    async fn a_record_the_run_did_not_change_is_neither_copied_nor_rewritten() {
        use std::os::unix::fs::MetadataExt;
        let records = Fixture::new();
        let (store, key) = (records.store(), records.key());
        let mut first = Record::load(&store, key).await.unwrap();
        Arc::make_mut(&mut first.refs).insert("refs/heads/main".into(), oid('a'));
        first.save(&store, key).await.unwrap();
        let inode = fs::metadata(store.path(key)).unwrap().ino();

        let mut again = Record::load(&store, key).await.unwrap();
        assert!(Arc::ptr_eq(&again.refs, &again.loaded), "one table, shared");
        assert!(Arc::ptr_eq(&again.lfs, &again.loaded_lfs));
        again.save(&store, key).await.unwrap();
        assert_eq!(
            fs::metadata(store.path(key)).unwrap().ino(),
            inode,
            "an unchanged record is not written again"
        );
    }

    #[tokio::test]
    async fn a_lost_write_is_merged_into_the_fresh_record_not_clobbered() {
        let records = Fixture::new();
        let (store, key) = (records.store(), records.key());
        let mut first = Record::load(&store, key).await.unwrap();
        Arc::make_mut(&mut first.refs).insert("refs/heads/main".into(), oid('a'));
        Arc::make_mut(&mut first.refs).insert("refs/heads/gone".into(), oid('a'));
        first.save(&store, key).await.unwrap();

        // Two runs read the same version; the other one saves first.
        let mut mine = Record::load(&store, key).await.unwrap();
        let mut theirs = Record::load(&store, key).await.unwrap();
        Arc::make_mut(&mut theirs.refs).insert("refs/heads/theirs".into(), oid('c'));
        theirs.save(&store, key).await.unwrap();
        Arc::make_mut(&mut mine.refs).insert("refs/heads/main".into(), oid('b'));
        Arc::make_mut(&mut mine.refs).remove("refs/heads/gone");
        mine.save(&store, key).await.unwrap();

        let saved = Record::load(&store, key).await.unwrap().refs;
        let want: RefMap = [
            ("refs/heads/main".to_owned(), oid('b')),
            ("refs/heads/theirs".to_owned(), oid('c')),
        ]
        .into_iter()
        .collect();
        assert_eq!(*saved, want);
    }

    #[tokio::test]
    async fn the_lfs_state_round_trips_merges_and_is_optional_in_old_records() {
        let records = Fixture::new();
        let (store, key) = (records.store(), records.key());
        // A record written before ferry carried LFS objects.
        fs::create_dir_all(store.path(key).parent().unwrap()).unwrap();
        let old = format!(
            "{{\"destination\": \"https://h/r.git\", \"refs\": {{\"refs/heads/main\": \"{}\"}}}}",
            oid('a')
        );
        fs::write(store.path(key), old).unwrap();
        let mut mine = Record::load(&store, key).await.unwrap();
        assert_eq!(mine.refs.len(), 1);
        assert!(mine.lfs.is_empty());

        // Two runs add LFS state from the same version; the second merges into the first.
        let mut theirs = Record::load(&store, key).await.unwrap();
        Arc::make_mut(&mut theirs.lfs)
            .tips
            .insert("refs/heads/dev".into(), oid('c'));
        Arc::make_mut(&mut theirs.lfs)
            .objects
            .insert("1".repeat(64));
        theirs.save(&store, key).await.unwrap();
        Arc::make_mut(&mut mine.lfs)
            .tips
            .insert("refs/heads/main".into(), oid('a'));
        Arc::make_mut(&mut mine.lfs).objects.insert("2".repeat(64));
        mine.save(&store, key).await.unwrap();

        let saved = Record::load(&store, key).await.unwrap().lfs;
        assert_eq!(saved.tips.len(), 2, "{saved:?}");
        assert_eq!(
            saved.objects,
            ["1".repeat(64), "2".repeat(64)].into_iter().collect()
        );
    }

    #[tokio::test]
    async fn a_settled_stamp_is_read_alone_and_never_outlives_its_record() {
        let records = Fixture::new();
        let (store, key) = (records.store(), records.key());
        assert_eq!(
            store.settled(key).await.unwrap(),
            None,
            "no record, no stamp"
        );
        let mut first = Record::load(&store, key).await.unwrap();
        Arc::make_mut(&mut first.refs).insert("refs/heads/main".into(), oid('a'));
        first.settle(Some("s1".into()));
        first.save(&store, key).await.unwrap();
        assert_eq!(store.settled(key).await.unwrap().as_deref(), Some("s1"));

        // A run that changes nothing and says nothing keeps it; one that only settles the
        // record anew writes the stamp.
        let mut again = Record::load(&store, key).await.unwrap();
        assert_eq!(again.loaded_settled.as_deref(), Some("s1"));
        again.save(&store, key).await.unwrap();
        assert_eq!(store.settled(key).await.unwrap().as_deref(), Some("s1"));
        let mut resettled = Record::load(&store, key).await.unwrap();
        resettled.settle(Some("s2".into()));
        resettled.save(&store, key).await.unwrap();
        assert_eq!(store.settled(key).await.unwrap().as_deref(), Some("s2"));

        // A change that says nothing of the stamp (a focused run) drops it.
        let mut focused = Record::load(&store, key).await.unwrap();
        Arc::make_mut(&mut focused.refs).insert("refs/heads/dev".into(), oid('b'));
        focused.save(&store, key).await.unwrap();
        assert_eq!(store.settled(key).await.unwrap(), None);

        // A record written behind the store's back, even in place at the same length, leaves
        // the stamp stale.
        let mut settled = Record::load(&store, key).await.unwrap();
        settled.settle(Some("s3".into()));
        settled.save(&store, key).await.unwrap();
        let path = store.path(key);
        let bytes = fs::read(&path).unwrap();
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        let moved = String::from_utf8(bytes)
            .unwrap()
            .replace(oid('a').as_str(), oid('c').as_str());
        fs::write(&path, moved).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(before + std::time::Duration::from_nanos(1))
            .unwrap();
        assert_eq!(store.settled(key).await.unwrap(), None);
        assert_eq!(
            Record::load(&store, key).await.unwrap().loaded_settled,
            None
        );
    }

    #[tokio::test]
    async fn a_merged_save_drops_both_writers_stamps() {
        let records = Fixture::new();
        let (store, key) = (records.store(), records.key());
        let mut first = Record::load(&store, key).await.unwrap();
        Arc::make_mut(&mut first.refs).insert("refs/heads/main".into(), oid('a'));
        first.save(&store, key).await.unwrap();

        let mut mine = Record::load(&store, key).await.unwrap();
        let mut theirs = Record::load(&store, key).await.unwrap();
        Arc::make_mut(&mut theirs.refs).insert("refs/heads/theirs".into(), oid('c'));
        theirs.settle(Some("theirs".into()));
        theirs.save(&store, key).await.unwrap();
        // This run settled at what it saw; the merge is not that.
        Arc::make_mut(&mut mine.refs).insert("refs/heads/main".into(), oid('b'));
        mine.settle(Some("mine".into()));
        mine.save(&store, key).await.unwrap();
        assert_eq!(store.settled(key).await.unwrap(), None);
        assert_eq!(
            Record::load(&store, key).await.unwrap().refs["refs/heads/main"],
            oid('b')
        );
    }

    #[test]
    fn assumed_values_fill_only_what_the_record_lacks() {
        let record = Record {
            refs: Arc::new([("refs/heads/main".to_owned(), oid('a'))].into()),
            lfs: Arc::default(),
            loaded: Arc::default(),
            loaded_lfs: Arc::default(),
            version: Version::Absent,
            loaded_settled: None,
            settled: Settle::Unsaid,
        };
        let assumed: RefMap = [
            ("refs/heads/main".to_owned(), oid('b')),
            ("refs/heads/dev".to_owned(), oid('c')),
        ]
        .into();
        let known = Record::with_assumed(&record.refs, &assumed);
        assert_eq!(known["refs/heads/main"], oid('a'));
        assert_eq!(known["refs/heads/dev"], oid('c'));
    }
}

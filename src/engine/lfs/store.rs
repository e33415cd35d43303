//! The local store of LFS objects: content-addressed files in the cache directory
//! (`<cache>/lfs/objects/aa/bb/<oid>`, git-lfs's own layout), shared by every mirror of the
//! cache. An object arrives in a temporary file, its sha256 and size are checked, and only then
//! is it renamed into place, so a file in the store is always whole and right. Like the rest of
//! the cache it is disposable: deleting it costs downloads, never correctness.

use crate::engine::lfs::pointer::Pointer;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

pub struct ObjectStore {
    root: PathBuf,
}

impl ObjectStore {
    /// The store of the cache at `cache_root`.
    pub fn new(cache_root: &Path) -> ObjectStore {
        ObjectStore {
            root: cache_root.join("lfs").join("objects"),
        }
    }

    /// Where the object lives (whether or not it is there).
    pub fn path(&self, oid: &str) -> PathBuf {
        let (a, b) = (oid.get(0..2).unwrap_or("00"), oid.get(2..4).unwrap_or("00"));
        self.root.join(a).join(b).join(oid)
    }

    /// Whether the store holds the object (a file of its size: only checked files get there).
    pub fn has(&self, p: &Pointer) -> bool {
        std::fs::metadata(self.path(&p.oid)).is_ok_and(|m| m.is_file() && m.len() == p.size)
    }

    /// A temporary file for `p`'s content, checked and moved into place by
    /// [`Incoming::finish`]; removed if dropped before that.
    pub async fn incoming(&self, p: &Pointer) -> Result<Incoming, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let target = self.path(&p.oid);
        let dir = target.parent().unwrap_or(&self.root).to_owned();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let tmp = dir.join(format!(
            "{}.tmp-{}-{}",
            p.oid,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        Ok(Incoming {
            file: Some(file),
            tmp,
            target,
            hasher: Sha256::new(),
            len: 0,
        })
    }
}

/// An object being received; see [`ObjectStore::incoming`].
pub struct Incoming {
    file: Option<tokio::fs::File>,
    tmp: PathBuf,
    target: PathBuf,
    hasher: Sha256,
    len: u64,
}

impl Incoming {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), String> {
        let Some(file) = self.file.as_mut() else {
            return Err("the object's file is already closed".into());
        };
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        file.write_all(chunk)
            .await
            .map_err(|e| format!("cannot write {}: {e}", self.tmp.display()))
    }

    /// Checks that what arrived is `p` (size and sha256) and moves it into the store.
    pub async fn finish(mut self, p: &Pointer) -> Result<(), String> {
        let Some(mut file) = self.file.take() else {
            return Err("the object's file is already closed".into());
        };
        file.flush()
            .await
            .map_err(|e| format!("cannot write {}: {e}", self.tmp.display()))?;
        drop(file);
        if self.len != p.size {
            return Err(format!(
                "received {} bytes where the pointer says {}",
                self.len, p.size
            ));
        }
        let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if digest != p.oid {
            return Err(format!(
                "the content received has sha256 {digest}, not the object's id"
            ));
        }
        tokio::fs::rename(&self.tmp, &self.target)
            .await
            .map_err(|e| format!("cannot move the object into {}: {e}", self.target.display()))
    }
}

impl Drop for Incoming {
    /// A download that failed or was checked and refused leaves nothing behind (after a
    /// successful rename there is nothing at `tmp` to remove).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer_of(content: &[u8]) -> Pointer {
        Pointer {
            oid: hex::encode(Sha256::digest(content)),
            size: content.len() as u64,
        }
    }

    #[tokio::test]
    async fn only_content_that_matches_its_pointer_enters_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::new(dir.path());
        let p = pointer_of(b"large file content");
        assert!(!store.has(&p));

        let mut wrong = store.incoming(&p).await.unwrap();
        wrong.write(b"large file c0ntent").await.unwrap();
        let e = wrong.finish(&p).await.unwrap_err();
        assert!(e.contains("sha256"), "{e}");
        let mut short = store.incoming(&p).await.unwrap();
        short.write(b"large").await.unwrap();
        assert!(short.finish(&p).await.unwrap_err().contains("bytes"));
        assert!(!store.has(&p));

        let mut right = store.incoming(&p).await.unwrap();
        right.write(b"large file ").await.unwrap();
        right.write(b"content").await.unwrap();
        right.finish(&p).await.unwrap();
        assert!(store.has(&p));
        let path = store.path(&p.oid);
        assert!(path.ends_with(format!("{}/{}/{}", &p.oid[0..2], &p.oid[2..4], p.oid)));
        // No temporary files are left beside it.
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
}

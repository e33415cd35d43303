//! What each destination held after ferry's last sync, per ref. This is how ferry tells a
//! legitimate upstream force-push (the destination still holds what ferry pushed) from an
//! out-of-band change (it holds something ferry never pushed). One small JSON file per
//! (source, destination, ref selection) beside the cache, replaced atomically: two mirrors
//! that differ only in their selection push different refs, so they keep separate records.

use crate::model::mirror::short_hash;
use crate::model::refs::{RefMap, RefSelection};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize)]
struct RecordFile {
    /// The destination's credential-free URL, for people inspecting the directory.
    destination: String,
    refs: RefMap,
}

/// The record of one destination of one source.
#[derive(Debug)]
pub struct Record {
    path: PathBuf,
    destination: String,
    /// As loaded, so an unchanged record is not rewritten (and fsynced) on every no-op sync.
    saved: RefMap,
    pub refs: RefMap,
}

impl Record {
    /// Loads the record, or an empty one when there is none yet. An unreadable record is
    /// treated as absent (first-sync rules apply, which never lose destination commits) and
    /// reported in the log.
    pub fn load(dir: &Path, destination: &str, selection: &RefSelection) -> Record {
        // The default selection keeps the name records had before selections were part of
        // the key, so existing records stay valid.
        let id = if *selection == RefSelection::default() {
            short_hash(destination)
        } else {
            short_hash(&format!("{destination}\n{}", selection.key()))
        };
        let path = dir.join(format!("{id}.json"));
        let refs = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<RecordFile>(&bytes) {
                Ok(file) => file.refs,
                Err(e) => {
                    tracing::warn!(record = %path.display(), error = %e, "ignoring an unreadable sync record; treating this as a first sync");
                    RefMap::new()
                }
            },
            Err(_) => RefMap::new(),
        };
        Record {
            path,
            destination: destination.to_owned(),
            saved: refs.clone(),
            refs,
        }
    }

    /// Writes the record atomically (temporary file, fsync, rename), if it changed.
    pub fn save(&mut self) -> std::io::Result<()> {
        if self.refs == self.saved && self.path.exists() {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let file = RecordFile {
            destination: self.destination.clone(),
            refs: self.refs.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp-{}", std::process::id()));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        self.saved = self.refs.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::refs::Oid;

    #[test]
    fn round_trips_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Record::load(dir.path(), "https://h/r.git", &RefSelection::default());
        assert!(r.refs.is_empty());
        r.refs.insert(
            "refs/heads/main".into(),
            Oid::parse(&"a".repeat(40)).unwrap(),
        );
        r.save().unwrap();
        let again = Record::load(dir.path(), "https://h/r.git", &RefSelection::default());
        assert_eq!(again.refs, r.refs);
        fs::write(&again.path, b"{not json").unwrap();
        assert!(
            Record::load(dir.path(), "https://h/r.git", &RefSelection::default())
                .refs
                .is_empty()
        );
        assert!(
            Record::load(dir.path(), "https://h/other.git", &RefSelection::default())
                .refs
                .is_empty()
        );
    }
}

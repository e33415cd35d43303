//! What a fleet's earlier discoveries took: one small JSON file per fleet in the cache
//! directory, so that a repository missing from a later listing is recognised as a member
//! that may have been deleted (and a renamed one as the same member).

use crate::fleet::plan::Known;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    members: Vec<Known>,
}

/// The inventory file of one fleet.
#[derive(Debug, Clone)]
pub struct Inventory {
    path: PathBuf,
}

impl Inventory {
    pub fn new(cache_dir: &Path, fleet: &str) -> Inventory {
        Inventory {
            path: cache_dir.join("fleets").join(format!("{fleet}.json")),
        }
    }

    /// The file: the Lambda function copies it to and from its state bucket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The known members; none when the fleet was never discovered here. A damaged file is
    /// an error: forgetting the members would hide deletions.
    pub fn load(&self) -> Result<Vec<Known>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<Document>(&bytes)
                .map(|d| d.members)
                .map_err(|e| {
                    format!(
                        "the fleet inventory {} is damaged ({e}); move it away to start the fleet afresh",
                        self.path.display()
                    )
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// Replaces the known members, atomically (a crash leaves the old file or the new one).
    pub fn save(&self, members: &[Known]) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", self.path.display());
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(fail)?;
        let bytes = serde_json::to_vec_pretty(&Document {
            members: members.to_vec(),
        })
        .map_err(|e| format!("cannot encode the fleet inventory: {e}"))?;
        let mut file = file_beside(dir).map_err(fail)?;
        file.write_all(&bytes).map_err(fail)?;
        file.as_file().sync_all().map_err(fail)?;
        file.persist(&self.path)
            .map(drop)
            .map_err(|e| fail(e.error))
    }
}

/// A new file in `dir`, to be renamed into place: made as `File::create` would make it (0666
/// less the umask; tempfile's own default is 0600). A file dropped before it is persisted is
/// removed.
pub(crate) fn file_beside(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let inv = Inventory::new(dir.path(), "acme");
        assert_eq!(inv.load().unwrap(), Vec::new());
        let members = vec![Known {
            id: "1".into(),
            path: "app.git".into(),
            destination_id: Some("9".into()),
            clone_url: Some("https://src.example/app.git".into()),
            destination_url: None,
        }];
        inv.save(&members).unwrap();
        assert_eq!(inv.load().unwrap(), members);
        std::fs::write(dir.path().join("fleets/acme.json"), "{not json").unwrap();
        let err = inv.load().unwrap_err();
        assert!(
            err.contains("damaged") && err.contains("move it away"),
            "{err}"
        );
    }
}

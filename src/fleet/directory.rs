//! A directory as a fleet's source: every bare repository below a root, recursively. A
//! repository's id is its relative path (a directory has nothing that survives a rename).

use crate::model::fleet::{Listing, Lookup, Repository};
use crate::model::mirror::CREATING_SUFFIX;
use std::io::ErrorKind;
use std::path::Path;

/// How deep below the root discovery looks; deeper trees are reported as incomplete.
const MAX_DEPTH: usize = 32;

/// Lists every bare repository below `root`. Symbolic links are not followed (a link could
/// lead out of the root or into a loop), a working copy's `.git` is not a bare repository,
/// and nothing inside a repository is searched. Any directory that cannot be read makes the
/// listing incomplete, with the reason.
pub fn discover(root: &Path) -> Listing {
    let mut listing = Listing::default();
    let mut problems = Vec::new();
    walk(root, root, 0, &mut listing.repositories, &mut problems);
    if !problems.is_empty() {
        listing.incomplete = Some(problems.join("; "));
    }
    listing
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    found: &mut Vec<Repository>,
    problems: &mut Vec<String>,
) {
    if depth > MAX_DEPTH {
        problems.push(format!(
            "{} is more than {MAX_DEPTH} directories deep; not searched",
            dir.display()
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(format!("cannot read {}: {e}", dir.display()));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", dir.display()));
                continue;
            }
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        // A repository ferry is still creating (or a killed run left half-made) is not one.
        let creating = entry
            .file_name()
            .as_encoded_bytes()
            .ends_with(CREATING_SUFFIX.as_bytes());
        if !is_dir || entry.file_name() == ".git" || creating {
            continue;
        }
        let path = entry.path();
        if is_repository(&path) {
            match path.strip_prefix(root).ok().and_then(|p| p.to_str()) {
                Some(relative) => {
                    let relative = relative.replace(std::path::MAIN_SEPARATOR, "/");
                    found.push(Repository {
                        id: relative.clone(),
                        path: relative,
                        ..Repository::default()
                    });
                }
                None => problems.push(format!(
                    "{} has a name that is not UTF-8; not mirrored",
                    path.display()
                )),
            }
        } else {
            walk(root, &path, depth + 1, found, problems);
        }
    }
}

/// Whether `dir` looks like a bare repository (what git itself checks first).
pub fn is_repository(dir: &Path) -> bool {
    dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
}

/// Looks up one repository directly: gone only when its directory does not exist.
pub fn lookup(root: &Path, path: &str) -> Lookup {
    let dir = root.join(path);
    match std::fs::metadata(&dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => Lookup::Gone,
        Err(e) => Lookup::Failed(format!("cannot look at {}: {e}", dir.display())),
        Ok(_) if is_repository(&dir) => Lookup::Exists,
        Ok(_) => Lookup::Failed(format!(
            "{} exists but is not a bare repository",
            dir.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare(root: &Path, path: &str) {
        let dir = root.join(path);
        std::fs::create_dir_all(dir.join("objects")).unwrap();
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::write(dir.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    }

    #[test]
    fn finds_bare_repositories_recursively_but_not_inside_them_nor_working_copies_nor_ones_being_created(
    ) {
        let root = tempfile::tempdir().unwrap();
        bare(root.path(), "app.git");
        bare(root.path(), "team/a/lib.git");
        bare(root.path(), "app.git/modules/inner.git");
        bare(root.path(), "work/.git");
        bare(root.path(), "team/.half.git.ferry-new");
        std::fs::create_dir_all(root.path().join("empty/dir")).unwrap();
        let mut paths: Vec<String> = discover(root.path())
            .repositories
            .into_iter()
            .map(|r| r.path)
            .collect();
        paths.sort();
        assert_eq!(paths, ["app.git", "team/a/lib.git"]);
    }

    #[test]
    fn a_lookup_says_gone_only_when_the_directory_is_missing() {
        let root = tempfile::tempdir().unwrap();
        bare(root.path(), "here.git");
        std::fs::create_dir_all(root.path().join("plain")).unwrap();
        assert_eq!(lookup(root.path(), "here.git"), Lookup::Exists);
        assert_eq!(lookup(root.path(), "missing.git"), Lookup::Gone);
        assert!(matches!(lookup(root.path(), "plain"), Lookup::Failed(_)));
    }
}

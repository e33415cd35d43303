//! Tidy checks over the source tree, in the manner of rust-analyzer's: the architecture's
//! dependency rules (ARCHITECTURE.md, "Architecture invariant" lines) hold in the code.
//!
//! Each top-level module under `src/` may name only the modules its rule allows in `crate::`
//! paths. Text, not the compiler, decides: a path in code counts, a path in a comment does not
//! (doc links to other rooms are fine; `use` is not).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level modules each top-level module may import. Arrows point one way:
/// app -> service -> engine, intake, config -> model; app -> aws -> engine -> model.
const RULES: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("config", &["model"]),
    ("engine", &["model"]),
    ("intake", &["model"]),
    ("fleet", &["config", "model"]),
    ("service", &["engine", "intake", "config", "model"]),
    ("aws", &["engine", "model"]),
    (
        "app",
        &[
            "service", "aws", "engine", "intake", "fleet", "config", "model",
        ],
    ),
];

/// Crates only one top-level module may use: the AWS SDK stays in `aws`.
const CONFINED: &[(&str, &str)] = &[
    ("aws_config", "aws"),
    ("aws_sdk_s3", "aws"),
    ("aws_sdk_secretsmanager", "aws"),
    ("aws_smithy_http_client", "aws"),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file's code names as `crate::<module>`, outside comments.
fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = after;
        }
    }
    found
}

/// The top-level module a file belongs to: `src/engine/plan.rs` -> `engine`.
fn top_level(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("under src");
    let first = rel.components().next().expect("a component");
    let first = first.as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn top_level_modules_import_only_what_their_rule_allows() {
    let rules: BTreeMap<&str, &[&str]> = RULES.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let module = top_level(file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(allowed) = rules.get(module.as_str()) else {
            broken.push(format!(
                "{}: top-level module '{module}' has no dependency rule; add it to RULES here and to ARCHITECTURE.md",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read a source file");
        for imported in crate_imports(&text) {
            if imported != module && !allowed.contains(&imported.as_str()) {
                broken.push(format!(
                    "{}: '{module}' imports crate::{imported}; '{module}' may import only {allowed:?}",
                    file.display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "dependency rules broken:\n{}",
        broken.join("\n")
    );
}

/// Whether a file's code (outside comments) names the crate `name` as a path.
fn uses_crate(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        code.match_indices(name).any(|(i, _)| {
            let before = code[..i].chars().next_back();
            let after = &code[i + name.len()..];
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && after.starts_with("::")
        })
    })
}

#[test]
fn confined_crates_are_used_only_in_their_module() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let module = top_level(file);
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (name, owner) in CONFINED {
            if module != *owner && uses_crate(&text, name) {
                broken.push(format!(
                    "{}: uses {name}, which only '{owner}' may use",
                    file.display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "confined crates used elsewhere:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_crate_scanner_sees_paths_in_code_only() {
    assert!(uses_crate("use aws_sdk_s3::Client;", "aws_sdk_s3"));
    assert!(uses_crate(
        "let c = ::aws_sdk_s3::Client::new(&x);",
        "aws_sdk_s3"
    ));
    assert!(!uses_crate("// aws_sdk_s3::Client", "aws_sdk_s3"));
    assert!(!uses_crate("use my_aws_sdk_s3::Client;", "aws_sdk_s3"));
}

#[test]
fn every_top_level_module_has_a_rule_and_a_module_doc() {
    let rules: BTreeSet<&str> = RULES.iter().map(|(m, _)| *m).collect();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(src())
        .expect("read src")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let names: BTreeSet<String> = dirs.iter().map(|d| top_level(&d.join("x.rs"))).collect();
    let expected: BTreeSet<String> = rules.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, expected, "src/ folders and the rules differ");
    for dir in dirs {
        let doc = std::fs::read_to_string(dir.join("mod.rs")).expect("every folder has a mod.rs");
        assert!(
            doc.starts_with("//!") && doc.contains("Architecture invariant"),
            "{}/mod.rs must open with a module doc that states its architecture invariant",
            dir.display()
        );
    }
}

#[test]
fn the_import_scanner_sees_code_and_skips_comments() {
    let text = "use crate::engine::sync;\n// crate::app in a comment\nlet x = crate::model::refs::Oid::parse(s); // crate::service\n/// [`crate::intake`]\n";
    let found: Vec<String> = crate_imports(text).into_iter().collect();
    assert_eq!(found, ["engine", "model"]);
}

#[test]
fn nothing_imports_the_front_ends() {
    // Enforced by RULES (no module lists "app"); this keeps the rule from being edited away.
    assert!(RULES.iter().all(|(_, allowed)| !allowed.contains(&"app")));
}

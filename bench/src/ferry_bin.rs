//! Building ferry in release mode and finding the binary cargo produced.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The workspace root (this crate lives in `<root>/bench`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `cargo build --release -p ferry --bin ferry` and the path of the binary,
/// taken from cargo's own build messages (so `CARGO_TARGET_DIR` is honoured).
pub fn build_release() -> Result<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--release", "-p", "ferry", "--bin", "ferry"])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let output = cmd
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "building ferry failed ({}); see the compiler output above",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|msg| ferry_executable(&msg))
        .context("cargo reported no `ferry` executable")
}

fn ferry_executable(msg: &Value) -> Option<PathBuf> {
    if msg["reason"] != "compiler-artifact" || msg["target"]["name"] != "ferry" {
        return None;
    }
    msg["executable"].as_str().map(PathBuf::from)
}

/// `<target dir>` for a binary at `<target dir>/release/ferry`.
pub fn target_dir(ferry: &Path) -> Result<PathBuf> {
    ferry
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .with_context(|| format!("{} is not in <target>/release/", ferry.display()))
}

//! One run of one mirror: the pure planner ([`plan`]) wrapped by its adapters: the git process
//! runner ([`git`]), the bare cache ([`cache`]), its refs ([`ref_files`]) and its history
//! ([`ancestry`]), the sync records ([`record`]), the Git LFS objects ([`lfs`]) and the pushes
//! started before their data arrives ([`held_push`]); [`sync`] wires them together and
//! [`report`] is what a run says it did.
//!
//! Architecture invariant: the engine imports only `model`. It knows nothing of the service,
//! the intake or the front ends; they call [`sync::run_mirror`] and read its report.

pub mod ancestry;
pub mod cache;
pub mod git;
mod held_push;
pub mod lfs;
pub mod packet_trace;
pub mod plan;
#[cfg(test)]
mod plan_props;
pub mod record;
mod ref_files;
pub mod report;
pub mod sync;

/// Runs the system git in `dir` for a unit test (isolated from the machine's configuration,
/// with an identity), feeding it `input`; its stdout. Panics on failure.
#[cfg(test)]
fn test_git(dir: &std::path::Path, args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run git");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write to git");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("git output");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

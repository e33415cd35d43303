//! Pushes started before their data is fetched. When an event says what its refs point at now
//! (or the source's listing does, in a run that lists the source first) and the destination's
//! record says what it holds, the push a run will most likely make is known before the
//! source's fetch ends: `<new id>:<ref>`, leased on the recorded value.
//! That push is started beside the fetch and held at its `pre-push` hook (see
//! [`GATE_HOOK`]): git connects, reads the destination's advertisement and checks the leases
//! meanwhile, which is a round trip and a server process off the run's path. Once the run has
//! planned for real, the held push is released only if it is exactly the push the plan makes
//! (same directory, same arguments); anything else drops it, and a dropped push stops at its
//! hook before it sends anything.
//!
//! Architecture invariant: a held push never sends anything the run's own plan did not
//! decide: it is released only when its argv equals the argv the plan's push would run.

use crate::engine::git::{Call, Git, GitFailure, HeldCall, Output, GATE_HOOK};
use crate::model::remote::Remote;
use std::path::{Path, PathBuf};

/// Where a cache keeps the hook of its held pushes.
const HOOKS_DIR: &str = "ferry-hooks";

/// A push started ahead of its plan and waiting at its hook.
pub struct HeldPush {
    dir: PathBuf,
    /// The arguments of the push this one stands for, as the run would run it.
    args: Vec<String>,
    call: HeldCall,
}

impl HeldPush {
    /// Starts `git <args>` (a push's arguments, hooks not skipped) in `dir`, held at the hook
    /// in `hooks`; it stands for the push of `expected` (the same push as the run would make
    /// it). `None` when git cannot be started: the run pushes the usual way.
    pub fn start(
        git: &Git,
        dir: &Path,
        expected: Vec<String>,
        args: Vec<String>,
        hooks: &Path,
        dest: &Remote,
    ) -> Option<HeldPush> {
        let hooks_path = format!("core.hooksPath={}", hooks.display());
        let argv: Vec<&str> = ["-c", hooks_path.as_str()]
            .into_iter()
            .chain(args.iter().map(String::as_str))
            .collect();
        let call = Call {
            remote: Some(dest),
            transfer: true,
            ..Call::default()
        };
        match git.start_held(dir, &argv, call) {
            Ok(call) => Some(HeldPush {
                dir: dir.to_owned(),
                args: expected,
                call,
            }),
            Err(e) => {
                tracing::debug!(error = %e.message, "no push started ahead of the fetch");
                None
            }
        }
    }

    /// Whether this stands for the push of `args` in `dir`.
    pub fn is(&self, dir: &Path, args: &[String]) -> bool {
        self.dir == dir && self.args == args
    }

    /// Lets the push go on and waits for it.
    pub async fn release(self) -> Result<Output, GitFailure> {
        self.call.release().await
    }
}

/// The cache's hooks directory holding the gate hook, written when missing or different;
/// `None` when it cannot be written or executed there (a read-only or `noexec` cache): git
/// skips a hook it cannot execute, so a held push there would not wait.
pub fn hooks_dir(cache_repo: &Path) -> Option<PathBuf> {
    let dir = cache_repo.join(HOOKS_DIR);
    let hook = dir.join("pre-push");
    let current = std::fs::read(&hook).is_ok_and(|text| text == GATE_HOOK.as_bytes());
    if !current {
        if let Err(e) = write_hook(&dir, &hook) {
            tracing::debug!(error = %e, "the gate hook could not be written; pushing after the fetch");
            return None;
        }
    }
    nix::unistd::access(&hook, nix::unistd::AccessFlags::X_OK)
        .ok()
        .map(|()| dir)
}

/// Writes the hook beside its place and renames it there, so that a push of another run never
/// sees half of it.
fn write_hook(dir: &Path, hook: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    // A failed write removes its temporary file (dropped unpersisted).
    let mut file = tempfile::Builder::new()
        .prefix(".pre-push.")
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempfile_in(dir)?;
    file.write_all(GATE_HOOK.as_bytes())?;
    file.as_file().sync_all()?;
    // Closed before it is in place: git cannot run a file still open for writing.
    file.into_temp_path().persist(hook).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_git;
    use std::time::{Duration, Instant};

    /// A work repository one commit ahead of a bare destination that holds its parent.
    struct Fixture {
        _dir: tempfile::TempDir,
        work: PathBuf,
        dest: Remote,
        dest_dir: PathBuf,
        hooks: PathBuf,
        old: String,
        new: String,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let dest_dir = dir.path().join("dest.git");
        std::fs::create_dir(&work).unwrap();
        test_git(&work, &["init", "-q"], None);
        test_git(&work, &["commit", "-q", "--allow-empty", "-m", "one"], None);
        test_git(dir.path(), &["init", "-q", "--bare", "dest.git"], None);
        test_git(
            &work,
            &["push", "-q", "../dest.git", "HEAD:refs/heads/main"],
            None,
        );
        let old = test_git(&work, &["rev-parse", "HEAD"], None)
            .trim()
            .to_owned();
        test_git(&work, &["commit", "-q", "--allow-empty", "-m", "two"], None);
        let new = test_git(&work, &["rev-parse", "HEAD"], None)
            .trim()
            .to_owned();
        let hooks = hooks_dir(&work.join(".git")).expect("an executable hook");
        let dest = Remote::parse(&dest_dir.display().to_string(), dir.path()).unwrap();
        Fixture {
            _dir: dir,
            work,
            dest,
            dest_dir,
            hooks,
            old,
            new,
        }
    }

    impl Fixture {
        fn start(&self, git: &Git) -> HeldPush {
            let lease = format!("--force-with-lease=refs/heads/main:{}", self.old);
            let refspec = format!("{}:refs/heads/main", self.new);
            let args: Vec<String> = ["push", "--porcelain", &lease, "--"]
                .into_iter()
                .chain([self.dest.git_url(), &refspec])
                .map(str::to_owned)
                .collect();
            HeldPush::start(git, &self.work, args.clone(), args, &self.hooks, &self.dest)
                .expect("git started")
        }

        fn dest_main(&self) -> String {
            test_git(&self.dest_dir, &["rev-parse", "refs/heads/main"], None)
                .trim()
                .to_owned()
        }

        /// Whether a process runs the gate hook of this fixture.
        fn hook_running(&self) -> bool {
            let hook = self.hooks.join("pre-push").display().to_string();
            std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
                std::fs::read(p.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&hook))
            })
        }

        fn wait_for_hook(&self, running: bool) {
            let until = Instant::now() + Duration::from_secs(20);
            while self.hook_running() != running {
                assert!(
                    Instant::now() < until,
                    "the hook never got to running={running}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn git(timeout: Duration) -> Git {
        Git::new(timeout, false, Vec::new(), std::env::temp_dir())
    }

    #[tokio::test]
    async fn a_held_push_waits_at_its_hook_and_lands_once_released() {
        let f = fixture();
        let held = f.start(&git(Duration::from_secs(60)));
        f.wait_for_hook(true);
        assert_eq!(f.dest_main(), f.old, "nothing landed while held");
        let out = held.release().await.unwrap();
        assert!(out.success, "{}", out.stderr);
        assert_eq!(f.dest_main(), f.new);
        assert!(
            out.stdout.contains("refs/heads/main"),
            "the porcelain report: {}",
            out.stdout
        );
    }

    #[tokio::test]
    async fn a_dropped_held_push_sends_nothing() {
        let f = fixture();
        let held = f.start(&git(Duration::from_secs(60)));
        f.wait_for_hook(true);
        drop(held);
        f.wait_for_hook(false);
        assert_eq!(f.dest_main(), f.old);
    }

    #[tokio::test]
    async fn a_held_push_s_deadline_starts_when_it_is_released() {
        let f = fixture();
        let held = f.start(&git(Duration::from_secs(1)));
        f.wait_for_hook(true);
        // Held past its whole deadline: waiting for ferry is not git's time.
        std::thread::sleep(Duration::from_millis(1500));
        let out = held.release().await.unwrap();
        assert!(out.success, "{}", out.stderr);
        assert_eq!(f.dest_main(), f.new);
    }

    #[test]
    fn the_gate_hook_lets_a_push_go_only_on_go() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = hooks_dir(dir.path()).unwrap();
        let hook = hooks.join("pre-push");
        // The word on descriptor 3, as ferry writes it; nothing at all is ferry gone.
        let verdict = |input: &str| {
            let script = format!("printf '{input}' | '{}' 3<&0", hook.display());
            std::process::Command::new("sh")
                .args(["-c", &script])
                .status()
                .unwrap()
                .success()
        };
        assert!(verdict("go\\n"));
        assert!(!verdict("stop\\n"));
        assert!(!verdict(""), "no word at all stops the push");
    }

    #[test]
    fn the_hook_is_rewritten_when_it_differs_and_made_executable() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join(HOOKS_DIR).join("pre-push");
        std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
        std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
        let hooks = hooks_dir(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(hooks.join("pre-push")).unwrap(),
            GATE_HOOK
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&hook).unwrap().permissions().mode();
        assert_eq!(mode & 0o100, 0o100, "executable: {mode:o}");
    }
}

//! Timing a child process while sampling its own peak memory.
//!
//! Method: a thread reads `VmHWM` (the kernel's resident-set high-water mark
//! of that one process) from `/proc/<pid>/status` every ~2 ms while the child
//! runs and keeps the last value it read. `VmHWM` only grows, so the last
//! sample is the peak up to ~2 ms before exit. It covers the process itself,
//! not the git processes it spawns (unlike `getrusage`/`wait4`'s `ru_maxrss`,
//! which would report the largest descendant).

use std::fs;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

const SAMPLE_INTERVAL: Duration = Duration::from_millis(2);

/// A finished child: wall-clock time from spawn to exit, its peak RSS and
/// what it wrote on stderr (ferry's log).
pub struct Sampled {
    pub elapsed: Duration,
    pub peak_kib: Option<u64>,
    pub stderr: String,
}

/// Runs `cmd` (stdout/stderr captured), failing with its stderr if it exits
/// unsuccessfully. `name` is the process name as shown in `/proc/<pid>/status`,
/// checked so a recycled pid is never sampled.
pub fn run_sampled(mut cmd: Command, name: &str) -> Result<Sampled> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        let (pid, name) = (child.id(), name.to_owned());
        thread::spawn(move || sample_peak(pid, &name, &done))
    };
    let output = child.wait_with_output();
    let elapsed = started.elapsed();
    done.store(true, Ordering::Release);
    let peak_kib = sampler
        .join()
        .map_err(|_| anyhow!("memory sampler thread panicked"))?;
    let output = output.with_context(|| format!("failed to wait for {cmd:?}"))?;
    check(&cmd, &output)?;
    Ok(Sampled {
        elapsed,
        peak_kib,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs `cmd` and returns how long it took (no memory sampling).
pub fn run_timed(mut cmd: Command) -> Result<Duration> {
    cmd.stdin(Stdio::null());
    let started = Instant::now();
    let output = cmd
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let elapsed = started.elapsed();
    check(&cmd, &output)?;
    Ok(elapsed)
}

fn check(cmd: &Command, output: &Output) -> Result<()> {
    if !output.status.success() {
        bail!(
            "{cmd:?} failed ({}):\nstderr:\n{}\nstdout:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end(),
            String::from_utf8_lossy(&output.stdout).trim_end()
        );
    }
    Ok(())
}

fn sample_peak(pid: u32, name: &str, done: &AtomicBool) -> Option<u64> {
    let path = format!("/proc/{pid}/status");
    let mut last = None;
    while !done.load(Ordering::Acquire) {
        if let Some(kib) = fs::read_to_string(&path)
            .ok()
            .and_then(|s| vm_hwm_kib(&s, name))
        {
            last = Some(kib);
        }
        thread::sleep(SAMPLE_INTERVAL);
    }
    last
}

/// `VmHWM` in KiB from a `/proc/<pid>/status` text, if it belongs to `name`
/// (a zombie or a recycled pid has no `VmHWM` or another name).
fn vm_hwm_kib(status: &str, name: &str) -> Option<u64> {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    if field("Name:")? != name {
        return None;
    }
    field("VmHWM:")?.strip_suffix("kB")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tferry\nState:\tS\nVmPeak:\t  20000 kB\nVmHWM:\t    7340 kB\n";
        assert_eq!(vm_hwm_kib(status, "ferry"), Some(7340));
        assert_eq!(vm_hwm_kib(status, "git"), None);
        assert_eq!(vm_hwm_kib("Name:\tferry\nState:\tZ\n", "ferry"), None);
    }
}

//! The record of a run, as `--json` prints it and as the human output renders it. Everything
//! here is already redacted: URLs are display URLs and messages come from [`crate::engine::git`].

use crate::engine::plan::Action;
use crate::model::kind::ErrorKind;
use crate::model::refs::Oid;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Updated,
    Forced,
    Deleted,
    Unchanged,
    Diverged,
    Rejected,
    Failed,
}

impl Outcome {
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            Outcome::Created
                | Outcome::Updated
                | Outcome::Forced
                | Outcome::Deleted
                | Outcome::Unchanged
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Forced => "forced",
            Outcome::Deleted => "deleted",
            Outcome::Unchanged => "unchanged",
            Outcome::Diverged => "diverged",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: String,
}

impl ErrorReport {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorReport {
        ErrorReport {
            kind,
            message: message.into(),
            hint: kind.hint().to_owned(),
        }
    }
}

impl From<crate::engine::git::GitFailure> for ErrorReport {
    fn from(f: crate::engine::git::GitFailure) -> ErrorReport {
        ErrorReport::new(f.kind, f.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefReport {
    #[serde(rename = "ref")]
    pub name: String,
    pub action: Action,
    /// Absent in `ferry plan`, which changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub old: Option<Oid>,
    #[serde(default)]
    pub new: Option<Oid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl RefReport {
    pub fn is_ok(&self) -> bool {
        match self.outcome {
            Some(o) => o.is_ok(),
            None => self.kind.is_none(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestinationReport {
    pub url: String,
    pub ok: bool,
    /// Whether the outcomes were read from a listing of the destination (taken before a run
    /// that pushed nothing, or after the push when asked for or when git's report was
    /// incomplete), rather than from the receiving server's per-ref push report.
    #[serde(default)]
    pub verified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
    #[serde(default)]
    pub refs: Vec<RefReport>,
    /// The Git LFS objects of the pushed refs; absent when the run had none to look at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs: Option<LfsReport>,
}

/// What a run did about a destination's Git LFS objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsReport {
    /// Objects uploaded to the destination in this run, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Objects the scan found that the destination already had.
    #[serde(default)]
    pub present: u64,
    /// Objects the source's LFS server does not have, with the refs that need them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<LfsObjectProblem>,
    /// Objects that could not be downloaded or uploaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<LfsObjectProblem>,
}

/// One LFS object that did not reach the destination, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsObjectProblem {
    pub oid: String,
    pub size: u64,
    pub kind: ErrorKind,
    pub message: String,
    /// The refs whose new commits point to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<String>,
}

impl DestinationReport {
    pub fn failed(url: &str, error: ErrorReport) -> DestinationReport {
        DestinationReport {
            url: url.to_owned(),
            ok: false,
            verified: false,
            error: Some(error),
            refs: Vec::new(),
            lfs: None,
        }
    }

    /// Sets `ok` from the error and the refs; call after filling them in.
    pub fn finish(mut self) -> DestinationReport {
        self.ok = self.error.is_none() && self.refs.iter().all(RefReport::is_ok);
        self
    }

    /// What failed on this destination: its own error, or else each failing ref. Empty when
    /// it is ok.
    pub fn failures(&self) -> Vec<Failure<'_>> {
        if self.ok {
            return Vec::new();
        }
        if let Some(e) = &self.error {
            return vec![Failure {
                place: &self.url,
                is_source: false,
                reference: None,
                error: e.clone(),
            }];
        }
        let refs: Vec<Failure<'_>> = self
            .refs
            .iter()
            .filter(|r| !r.is_ok())
            .map(|r| {
                let kind = r.kind.unwrap_or(if r.outcome == Some(Outcome::Diverged) {
                    ErrorKind::Diverged
                } else {
                    ErrorKind::Other
                });
                let what = r
                    .reason
                    .clone()
                    .or_else(|| r.outcome.map(|o| o.as_str().to_owned()))
                    .unwrap_or_else(|| "failed".to_owned());
                Failure {
                    place: &self.url,
                    is_source: false,
                    reference: Some(r),
                    error: ErrorReport {
                        kind,
                        message: format!("{}: {what}", r.name),
                        hint: r.hint.clone().unwrap_or_else(|| kind.hint().to_owned()),
                    },
                }
            })
            .collect();
        if refs.is_empty() {
            // Not ok, yet neither an error nor a failing ref: say so rather than nothing.
            return vec![Failure {
                place: &self.url,
                is_source: false,
                reference: None,
                error: ErrorReport::new(ErrorKind::Other, "the destination failed"),
            }];
        }
        refs
    }
}

/// One thing that went wrong in a run: where (the source's or a destination's URL), which
/// ref when it was a single ref, and the error. [`MirrorReport::failures`] is the one place
/// that decides what failed; the Lambda result, the service's retry decision and
/// notifications, the store's destination status and the history table all read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<'a> {
    /// The URL of the source or destination.
    pub place: &'a str,
    /// Whether `place` is the source.
    pub is_source: bool,
    /// The failing ref, when the failure is one ref's.
    pub reference: Option<&'a RefReport>,
    pub error: ErrorReport,
}

impl Failure<'_> {
    /// Whether this failure is a divergence (a destination changed out of band), which needs
    /// a person rather than a retry. Refs left unpushed because another ref diverged
    /// (`divergence = abort`) carry the divergence kind and count too.
    pub fn is_divergence(&self) -> bool {
        self.error.kind == ErrorKind::Diverged
            || self.reference.and_then(|r| r.outcome) == Some(Outcome::Diverged)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceReport {
    pub url: String,
    pub ok: bool,
    /// How many selected refs the source has (in a run narrowed to the refs an event named:
    /// how many of those).
    #[serde(default)]
    pub refs: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
    /// A digest of the selected refs the run synced from (see `model::refs::refs_digest`):
    /// what a poll compares the source with. Absent when the source could not be read, and
    /// when the run read only the refs an event named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorReport {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ok: bool,
    #[serde(default)]
    pub duration_ms: u64,
    pub source: SourceReport,
    #[serde(default)]
    pub destinations: Vec<DestinationReport>,
}

impl MirrorReport {
    /// Everything that failed in this run, the source first, then each destination in order
    /// (see [`DestinationReport::failures`]). Empty when the run is ok.
    pub fn failures(&self) -> Vec<Failure<'_>> {
        let source = self.source.error.iter().map(|e| Failure {
            place: &self.source.url,
            is_source: true,
            reference: None,
            error: e.clone(),
        });
        source
            .chain(
                self.destinations
                    .iter()
                    .flat_map(DestinationReport::failures),
            )
            .collect()
    }

    /// Whether a retry could help: something failed for a transient reason (network,
    /// timeout, 5xx, lease). Permanent failures wait for a new event.
    pub fn has_transient_failure(&self) -> bool {
        self.failures().iter().any(|f| f.error.kind.is_transient())
    }

    /// What failed, in one line (the error a Lambda invocation returns).
    pub fn failure_summary(&self) -> String {
        let parts: Vec<String> = self
            .failures()
            .iter()
            .map(|f| {
                let role = if f.is_source { "source " } else { "" };
                format!("{role}{}: {}: {}", f.place, f.error.kind, f.error.message)
            })
            .collect();
        format!("mirror {} failed: {}", self.name, parts.join("; "))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub ok: bool,
    /// True for `ferry plan`: nothing was pushed.
    pub plan_only: bool,
    pub mirrors: Vec<MirrorReport>,
}

impl RunReport {
    pub fn new(plan_only: bool, mirrors: Vec<MirrorReport>) -> RunReport {
        RunReport {
            ok: mirrors.iter().all(|m| m.ok),
            plan_only,
            mirrors,
        }
    }

    /// Plain-words rendering for people. Unchanged refs are counted, not listed.
    pub fn render_human(&self) -> String {
        let mut out = String::new();
        for m in &self.mirrors {
            let verb = if self.plan_only { "plan for" } else { "mirror" };
            let _ = writeln!(
                out,
                "{verb} {}: {} ({} ms)",
                m.name,
                if m.ok { "ok" } else { "FAILED" },
                m.duration_ms
            );
            match &m.source.error {
                Some(e) => {
                    let _ = writeln!(out, "  source {}: {}: {}", m.source.url, e.kind, e.message);
                    let _ = writeln!(out, "    hint: {}", e.hint);
                }
                None => {
                    let _ = writeln!(out, "  source {}: {} refs", m.source.url, m.source.refs);
                }
            }
            for d in &m.destinations {
                render_destination(&mut out, d, self.plan_only);
            }
        }
        out
    }
}

fn render_destination(out: &mut String, d: &DestinationReport, plan_only: bool) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in &d.refs {
        let label = match r.outcome {
            Some(o) => o.as_str(),
            None => r.action.as_str(),
        };
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    let summary = counts
        .iter()
        .map(|(l, n)| format!("{n} {l}"))
        .collect::<Vec<_>>()
        .join(", ");
    let state = if d.ok { "ok" } else { "FAILED" };
    let _ = writeln!(
        out,
        "  -> {}: {state}{}{summary}",
        d.url,
        if summary.is_empty() { "" } else { "; " }
    );
    if let Some(e) = &d.error {
        let _ = writeln!(out, "     {}: {}", e.kind, e.message);
        let _ = writeln!(out, "     hint: {}", e.hint);
    }
    if let Some(lfs) = &d.lfs {
        render_lfs(out, lfs);
    }
    for r in &d.refs {
        let quiet = match r.outcome {
            Some(Outcome::Unchanged) => r.reason.is_none(),
            Some(_) => false,
            None => r.action == Action::Unchanged,
        };
        if quiet {
            continue;
        }
        let label = if plan_only {
            format!("would {}", r.action.as_str())
        } else {
            r.outcome
                .map_or(r.action.as_str(), Outcome::as_str)
                .to_owned()
        };
        let change = match (&r.old, &r.new) {
            (Some(o), Some(n)) if o != n => format!(" {}..{}", o.short(), n.short()),
            (None, Some(n)) => format!(" {}", n.short()),
            (Some(o), None) => format!(" (was {})", o.short()),
            _ => String::new(),
        };
        let mut line = format!("     {}: {label}{change}", r.name);
        if let Some(reason) = &r.reason {
            line.push_str(&format!(": {reason}"));
        }
        if let Some(hint) = &r.hint {
            line.push_str(&format!("; {hint}"));
        }
        let _ = writeln!(out, "{line}");
    }
}

fn render_lfs(out: &mut String, lfs: &LfsReport) {
    let _ = writeln!(
        out,
        "     lfs: {} object{} sent ({}), {} already there",
        lfs.objects,
        if lfs.objects == 1 { "" } else { "s" },
        bytes_text(lfs.bytes),
        lfs.present
    );
    for (label, problems) in [
        ("missing on the source", &lfs.missing),
        ("failed", &lfs.failed),
    ] {
        for p in problems {
            let refs = if p.refs.is_empty() {
                String::new()
            } else {
                format!(" (needed by {})", p.refs.join(", "))
            };
            let _ = writeln!(
                out,
                "     lfs object {} ({}): {label}{refs}: {}",
                p.oid,
                bytes_text(p.size),
                p.message
            );
        }
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_human_report_says_what_lfs_sent_and_what_is_missing() {
        let mut m = report(None, &[None]);
        m.destinations[0].lfs = Some(LfsReport {
            objects: 2,
            bytes: 3 * 1024 * 1024,
            present: 1,
            missing: vec![LfsObjectProblem {
                oid: "ab".repeat(32),
                size: 10,
                kind: ErrorKind::LfsMissing,
                message: "the source's LFS server answered 404: Object does not exist".into(),
                refs: vec!["refs/heads/broken".into()],
            }],
            failed: Vec::new(),
        });
        let text = RunReport::new(false, vec![m]).render_human();
        assert!(
            text.contains("lfs: 2 objects sent (3.0 MiB), 1 already there"),
            "{text}"
        );
        assert!(
            text.contains("missing on the source (needed by refs/heads/broken)"),
            "{text}"
        );
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(bytes_text(0), "0 B");
        assert_eq!(bytes_text(1023), "1023 B");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(3 * 1024 * 1024), "3.0 MiB");
    }

    fn report(source: Option<ErrorKind>, dests: &[Option<ErrorKind>]) -> MirrorReport {
        MirrorReport {
            name: "m".into(),
            ok: false,
            duration_ms: 1,
            source: SourceReport {
                url: "s".into(),
                ok: source.is_none(),
                refs: 0,
                error: source.map(|k| ErrorReport::new(k, "x")),
                digest: None,
            },
            destinations: dests
                .iter()
                .map(|k| DestinationReport {
                    url: "d".into(),
                    ok: k.is_none(),
                    verified: false,
                    error: k.map(|k| ErrorReport::new(k, "x")),
                    refs: Vec::new(),
                    lfs: None,
                })
                .collect(),
        }
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(report(Some(ErrorKind::Network), &[]).has_transient_failure());
        assert!(!report(Some(ErrorKind::Auth), &[]).has_transient_failure());
        assert!(report(None, &[None, Some(ErrorKind::Timeout)]).has_transient_failure());
        assert!(!report(
            None,
            &[Some(ErrorKind::Permission), Some(ErrorKind::Diverged)]
        )
        .has_transient_failure());
    }
}

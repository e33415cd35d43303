//! The record of a run, as `--json` prints it and as the human output renders it. Everything
//! here is already redacted: URLs are display URLs and messages come from [`crate::git`].

use crate::kind::ErrorKind;
use crate::plan::Action;
use crate::refs::Oid;
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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

impl From<crate::git::GitFailure> for ErrorReport {
    fn from(f: crate::git::GitFailure) -> ErrorReport {
        ErrorReport::new(f.kind, f.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefReport {
    #[serde(rename = "ref")]
    pub name: String,
    pub action: Action,
    /// Absent in `ferry plan`, which changes nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    pub old: Option<Oid>,
    pub new: Option<Oid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
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

#[derive(Debug, Clone, Serialize)]
pub struct DestinationReport {
    pub url: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
    pub refs: Vec<RefReport>,
}

impl DestinationReport {
    pub fn failed(url: &str, error: ErrorReport) -> DestinationReport {
        DestinationReport {
            url: url.to_owned(),
            ok: false,
            error: Some(error),
            refs: Vec::new(),
        }
    }

    /// Sets `ok` from the error and the refs; call after filling them in.
    pub fn finish(mut self) -> DestinationReport {
        self.ok = self.error.is_none() && self.refs.iter().all(RefReport::is_ok);
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub url: String,
    pub ok: bool,
    /// How many selected refs the source has.
    pub refs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MirrorReport {
    pub name: String,
    pub ok: bool,
    pub duration_ms: u64,
    pub source: SourceReport,
    pub destinations: Vec<DestinationReport>,
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

//! The markdown tables (timings, where one sync's time goes) and the
//! targets section.

use std::fmt::Write;

use crate::method::Method;
use crate::phases::{Phase, PhaseTotal, Profile};
use crate::runner::Row;
use crate::stats::{ms, Stats};
use crate::transport::Transport;

/// Thresholds of the targets section ("Faster than hand-tuned git").
/// One-commit sync on the commit-heavy repos (small, large): no slower than
/// the raw cached git baseline (a fetch and a push).
const MAX_FERRY_OVER_RAW: f64 = 1.0;
/// Many refs, one changed: a stricter bar, since raw git's fetch and push
/// each pay for a whole ref advertisement while ferry moves one ref.
const MAX_FERRY_OVER_RAW_MANY_REFS: f64 = 0.8;
/// The same, for an event that names the changed ref (`--ref`): raw git still
/// lists and matches every ref, ferry fetches and pushes one.
const MAX_EVENT_OVER_RAW_MANY_REFS: f64 = 0.5;
/// Judged over http, where the classic clone's transfer really costs.
const MIN_CLASSIC_OVER_FERRY: f64 = 30.0;
/// "Nearly flat": the large repo (~20x the small one) may cost at most this
/// much more for ferry.
const MAX_LARGE_OVER_SMALL: f64 = 1.5;
/// A no-op is one look at the source and nothing else.
const MAX_NOOP_OVER_LS_REMOTE: f64 = 1.25;
/// An event whose refs already match: ferry knows from its cache and record.
const MAX_EVENT_NOOP_OVER_LS_REMOTE: f64 = 1.1;
const MAX_PEAK_MIB: f64 = 30.0;

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| repo | size | transport | ferry ms | event ms | raw cached ms | floor ms | classic ms \
         | ferry/raw | event/raw | classic/ferry | no-op ms | event no-op ms | ls-remote ms \
         | no-op/ls-remote | event no-op/ls-remote | peak RSS MiB |\n",
    );
    out.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for row in rows {
        let cells = [
            row.repo.spec.name.to_string(),
            row.repo.describe(),
            row.transport.to_string(),
            timing(row.stats(Method::Ferry)),
            timing(row.stats(Method::FerryEvent)),
            timing(row.stats(Method::RawCached)),
            timing(row.stats(Method::Floor)),
            timing(row.stats(Method::Classic)),
            ratio_cell(ratio(row, Method::Ferry, Method::RawCached)),
            ratio_cell(ratio(row, Method::FerryEvent, Method::RawCached)),
            ratio_cell(ratio(row, Method::Classic, Method::Ferry)),
            timing(row.stats(Method::FerryNoop)),
            timing(row.stats(Method::FerryEventNoop)),
            timing(row.stats(Method::LsRemote)),
            ratio_cell(ratio(row, Method::FerryNoop, Method::LsRemote)),
            ratio_cell(ratio(row, Method::FerryEventNoop, Method::LsRemote)),
            row.peak_kib
                .map_or("n/a".into(), |kib| format!("{:.1}", kib as f64 / 1024.0)),
        ];
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// The second table, "where the time goes": per row, ferry's profiled
/// one-commit sync and no-op with their wall time, git process count and
/// each phase's summed git time (process count in parentheses).
pub fn phase_table(rows: &[Row]) -> String {
    let mut out = String::from("| repo | transport | sync | ferry wall ms | git processes |");
    for phase in Phase::ALL {
        let _ = write!(out, " {phase} ms (n) |");
    }
    out.push_str(" bookkeeping calls |\n|---|---|---|--:|--:|");
    out.push_str(&"--:|".repeat(Phase::ALL.len()));
    out.push_str("---|\n");
    for row in rows {
        for (method, profile) in &row.profiles {
            let mut cells = vec![
                row.repo.spec.name.to_string(),
                row.transport.to_string(),
                sync_kind(*method).to_string(),
                format!("{:.1}", ms(profile.wall)),
                profile.calls.len().to_string(),
            ];
            cells.extend(Phase::ALL.map(|p| phase_cell(profile.total(p))));
            cells.push(bookkeeping_cell(profile));
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
    }
    out
}

fn sync_kind(method: Method) -> &'static str {
    match method {
        Method::FerryNoop => "no-op",
        Method::FerryEvent => "one commit, --ref",
        _ => "one commit",
    }
}

/// "85 (1)", or "-" for a phase without git calls.
fn phase_cell(total: PhaseTotal) -> String {
    if total.calls == 0 {
        return "-".into();
    }
    format!("{} ({})", total.elapsed_ms, total.calls)
}

/// "for-each-ref 2, gc 1"
fn bookkeeping_cell(profile: &Profile) -> String {
    let counts = profile.bookkeeping();
    if counts.is_empty() {
        return "-".into();
    }
    counts
        .iter()
        .map(|(subcommand, n)| format!("{subcommand} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "41.2 (min 39.8, n=5)"
fn timing(stats: Option<&Stats>) -> String {
    match stats.and_then(|s| Some((s.median_ms()?, s.min_ms()?, s.len()))) {
        Some((median, min, n)) => format!("{median:.1} (min {min:.1}, n={n})"),
        None => "n/a".into(),
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.2}x"))
}

/// Ratio of the medians of two methods in one row.
fn ratio(row: &Row, num: Method, den: Method) -> Option<f64> {
    let n = row.stats(num)?.median_ms()?;
    let d = row.stats(den)?.median_ms()?;
    (d > 0.0).then(|| n / d)
}

fn row_label(row: &Row) -> String {
    format!("{}/{}", row.repo.spec.name, row.transport)
}

/// One PASS/MISS line.
struct Verdict {
    target: String,
    pass: bool,
    detail: String,
}

pub fn targets(rows: &[Row]) -> String {
    let rows_where = |keep: fn(&Row) -> bool| rows.iter().filter(|r| keep(r)).collect::<Vec<_>>();
    let verdicts = [
        ratio_target(
            &rows_where(|r| !r.repo.spec.many_refs()),
            &format!(
                "one-commit sync: ferry/raw cached <= {MAX_FERRY_OVER_RAW:.2}x on the small \
                 and large repos (every row)"
            ),
            |r| ratio(r, Method::Ferry, Method::RawCached),
            Bound::AtMost(MAX_FERRY_OVER_RAW),
        ),
        ratio_target(
            &rows_where(|r| r.repo.spec.many_refs()),
            &format!(
                "many refs, one changed: ferry/raw cached <= {MAX_FERRY_OVER_RAW_MANY_REFS:.2}x \
                 (every row)"
            ),
            |r| ratio(r, Method::Ferry, Method::RawCached),
            Bound::AtMost(MAX_FERRY_OVER_RAW_MANY_REFS),
        ),
        ratio_target(
            &rows_where(|r| r.repo.spec.many_refs()),
            &format!(
                "many refs, an event naming the changed ref: ferry --ref/raw cached <= \
                 {MAX_EVENT_OVER_RAW_MANY_REFS:.2}x (every row)"
            ),
            |r| ratio(r, Method::FerryEvent, Method::RawCached),
            Bound::AtMost(MAX_EVENT_OVER_RAW_MANY_REFS),
        ),
        ratio_target(
            rows,
            &format!(
                "no-op: ferry sync <= {MAX_NOOP_OVER_LS_REMOTE:.2}x one ls-remote of the source \
                 (every row)"
            ),
            |r| ratio(r, Method::FerryNoop, Method::LsRemote),
            Bound::AtMost(MAX_NOOP_OVER_LS_REMOTE),
        ),
        ratio_target(
            rows,
            &format!(
                "an event whose refs already match: ferry --ref <= \
                 {MAX_EVENT_NOOP_OVER_LS_REMOTE:.2}x one ls-remote of the source (every row)"
            ),
            |r| ratio(r, Method::FerryEventNoop, Method::LsRemote),
            Bound::AtMost(MAX_EVENT_NOOP_OVER_LS_REMOTE),
        ),
        ratio_target(
            &rows_where(|r| r.repo.spec.large && r.transport == Transport::Http),
            &format!("classic/ferry >= {MIN_CLASSIC_OVER_FERRY}x on the large repo over http"),
            |r| ratio(r, Method::Classic, Method::Ferry),
            Bound::AtLeast(MIN_CLASSIC_OVER_FERRY),
        ),
        flatness(rows),
        peak_memory(rows),
    ];
    let mut out = String::new();
    for v in verdicts {
        let status = if v.pass { "PASS" } else { "MISS" };
        let _ = writeln!(out, "- **{status}** {}: {}", v.target, v.detail);
    }
    out
}

#[derive(Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

impl Bound {
    fn holds(self, value: f64) -> bool {
        match self {
            Bound::AtMost(max) => value <= max,
            Bound::AtLeast(min) => value >= min,
        }
    }

    /// Orders values worst first.
    fn badness(self, value: f64) -> f64 {
        match self {
            Bound::AtMost(_) => value,
            Bound::AtLeast(_) => -value,
        }
    }
}

/// Every row must meet `bound`; the detail lists the worst row and all values.
fn ratio_target<R: std::borrow::Borrow<Row>>(
    rows: &[R],
    target: &str,
    value: impl Fn(&Row) -> Option<f64>,
    bound: Bound,
) -> Verdict {
    let values: Vec<(String, f64)> = rows
        .iter()
        .filter_map(|r| Some((row_label(r.borrow()), value(r.borrow())?)))
        .collect();
    let worst = values
        .iter()
        .max_by(|a, b| bound.badness(a.1).total_cmp(&bound.badness(b.1)));
    let all = values
        .iter()
        .map(|(label, v)| format!("{label} {v:.2}x"))
        .collect::<Vec<_>>()
        .join(", ");
    match worst {
        Some((label, v)) => Verdict {
            target: target.into(),
            pass: values.iter().all(|(_, v)| bound.holds(*v)),
            detail: format!("worst {v:.2}x ({label}); all: {all}"),
        },
        None => Verdict {
            target: target.into(),
            pass: false,
            detail: "no data".into(),
        },
    }
}

/// ferry's median on the large repo over the small one, per transport, with
/// the raw baseline's own growth for context.
fn flatness(rows: &[Row]) -> Verdict {
    let find = |name: &str, t: Transport| {
        rows.iter()
            .find(|r| r.repo.spec.name == name && r.transport == t)
    };
    let growth = |t: Transport, method: Method| -> Option<f64> {
        let large = find("large", t)?.stats(method)?.median_ms()?;
        let small = find("small", t)?.stats(method)?.median_ms()?;
        Some(large / small)
    };
    let mut pass = true;
    let mut parts = vec![];
    for t in Transport::ALL {
        match growth(t, Method::Ferry) {
            Some(g) => {
                pass &= g <= MAX_LARGE_OVER_SMALL;
                let raw = growth(t, Method::RawCached)
                    .map_or(String::new(), |r| format!(", raw cached {r:.2}x"));
                parts.push(format!("{t}: ferry large/small {g:.2}x{raw}"));
            }
            None => pass = false,
        }
    }
    let size = |name: &str| {
        rows.iter()
            .find(|r| r.repo.spec.name == name)
            .map_or(0.0, |r| r.repo.bytes as f64 / 1e6)
    };
    Verdict {
        target: format!(
            "ferry nearly flat in repo size (large/small <= {MAX_LARGE_OVER_SMALL}x, \
             {:.1} MB vs {:.1} MB)",
            size("large"),
            size("small")
        ),
        pass: pass && !parts.is_empty(),
        detail: parts.join("; "),
    }
}

fn peak_memory(rows: &[Row]) -> Verdict {
    let worst = rows
        .iter()
        .filter_map(|r| Some((r.peak_kib?, row_label(r))))
        .max();
    let target = format!("peak RSS of the ferry process <= {MAX_PEAK_MIB} MiB");
    match worst {
        Some((kib, label)) => {
            let mib = kib as f64 / 1024.0;
            Verdict {
                target,
                pass: mib <= MAX_PEAK_MIB,
                detail: format!("max {mib:.1} MiB ({label})"),
            }
        }
        None => Verdict {
            target,
            pass: false,
            detail: "no samples".into(),
        },
    }
}

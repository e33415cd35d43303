//! The page of one mirror (`GET /mirrors/{name}`; pure): its status and destinations, a plot
//! of sync duration and lag over its recent runs (server-rendered SVG), and each run with its
//! per-ref outcomes and errors (`<details>`, no script). Every splice is escaped by maud.

use crate::engine::plan::Action;
use crate::engine::report::{ErrorReport, MirrorReport, RefReport};
use crate::service::page::{
    ago, destination_row, duration, head, lag, mirror_row, rfc3339, state_class, state_label,
};
use crate::service::status::{MirrorStatus, RunDetail};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use std::fmt::Write;

/// How many runs the page shows and plots.
pub const RUNS_SHOWN: usize = 50;

/// The page of `mirror` with its `runs`, newest first.
pub fn mirror_page(mirror: &MirrorStatus, runs: &[RunDetail], now: i64, refresh: u32) -> String {
    let back = match &mirror.fleet {
        Some(f) => format!("/#group-{f}"),
        None => "/#group-configured".to_owned(),
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&format!("{} · ferry", mirror.name), refresh))
            body {
                main.wrap {
                    header {
                        p { a href=(back) { "← all mirrors" } }
                        h1 { (mirror.name) " "
                            span.badge.(state_class(mirror.state)) { (state_label(mirror.state)) } }
                        p.muted {
                            @if let Some(f) = &mirror.fleet { "member of the fleet " (f) " · " }
                            (lag(mirror, now))
                        }
                    }
                    div.scroll {
                        table.mirrors {
                            tbody {
                                (mirror_row(mirror, now))
                                @for d in &mirror.destinations { (destination_row(d, now)) }
                            }
                        }
                    }
                    section aria-labelledby="plot-heading" {
                        h2 #plot-heading { "Duration and lag of the last " (runs.len().min(RUNS_SHOWN)) " runs" }
                        @if runs.is_empty() {
                            p.muted { "No runs yet." }
                        } @else {
                            (plot(&runs[..runs.len().min(RUNS_SHOWN)]))
                            p.legend.muted {
                                span.duration { "■ sync duration" } " · "
                                span.lag { "■ lag (oldest event the run handled to its end)" }
                                " · a filled point is a failed run"
                            }
                        }
                    }
                    section aria-labelledby="runs-heading" {
                        h2 #runs-heading { "Runs" }
                        @if runs.is_empty() { p.muted { "No runs yet." } }
                        @for (i, run) in runs.iter().take(RUNS_SHOWN).enumerate() {
                            (run_html(run, i == 0, now))
                        }
                    }
                }
            }
        }
    }
    .into_string()
}

/// The lag a run ended: from the oldest event it handled to its end (`None`: it handled no
/// event it could name).
fn lag_ms(run: &RunDetail) -> Option<i64> {
    run.oldest_event_at
        .map(|t| (run.summary.finished_at - t).max(0))
}

/// Sync duration and lag over `runs` (newest first), oldest on the left; seconds on the y
/// axis, one point per run with its numbers in a tooltip.
fn plot(runs: &[RunDetail]) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 56.0;
    const RIGHT: f64 = 12.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 28.0;
    let runs: Vec<&RunDetail> = runs.iter().rev().collect();
    let seconds = |ms: i64| ms.max(0) as f64 / 1000.0;
    let durations: Vec<f64> = runs
        .iter()
        .map(|r| seconds(r.summary.finished_at - r.summary.started_at))
        .collect();
    let lags: Vec<Option<f64>> = runs.iter().map(|r| lag_ms(r).map(seconds)).collect();
    let top = durations
        .iter()
        .copied()
        .chain(lags.iter().flatten().copied())
        .fold(0.0_f64, f64::max);
    let top = nice_ceiling(top);
    let x = |i: usize| {
        if runs.len() < 2 {
            LEFT + (W - LEFT - RIGHT) / 2.0
        } else {
            LEFT + i as f64 * (W - LEFT - RIGHT) / (runs.len() - 1) as f64
        }
    };
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v / top);
    let line = |values: &[Option<f64>]| {
        let mut points = String::new();
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(points, "{:.1},{:.1} ", x(i), y(*v));
            }
        }
        points.trim_end().to_owned()
    };
    let duration_points = line(&durations.iter().copied().map(Some).collect::<Vec<_>>());
    let lag_points = line(&lags);
    let ticks = [0.0, top / 2.0, top];
    let first = runs.first().map(|r| r.summary.started_at);
    let last = runs.last().map(|r| r.summary.started_at);
    html! {
        svg.plot xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {W} {H}")) role="img"
            aria-label=(format!("sync duration and lag of the last {} runs", runs.len())) {
            @for t in ticks {
                line.axis x1=(LEFT) x2=(W - RIGHT) y1=(format!("{:.1}", y(t))) y2=(format!("{:.1}", y(t))) {}
                text x=(LEFT - 6.0) y=(format!("{:.1}", y(t) + 4.0)) text-anchor="end" { (axis_label(t)) }
            }
            @if let Some(t) = first {
                text x=(LEFT) y=(H - 8.0) text-anchor="start" { (rfc3339(t)) }
            }
            @if let (Some(t), true) = (last, runs.len() > 1) {
                text x=(W - RIGHT) y=(H - 8.0) text-anchor="end" { (rfc3339(t)) }
            }
            polyline.line.duration points=(duration_points) {}
            @if !lag_points.is_empty() {
                polyline.line.lag points=(lag_points) {}
            }
            @for (i, r) in runs.iter().enumerate() {
                @let failed = if r.summary.ok { "" } else { " failed" };
                circle class=(format!("point duration{failed}")) cx=(format!("{:.1}", x(i)))
                    cy=(format!("{:.1}", y(durations[i]))) r="3.5" {
                    title { "run " (r.summary.id) ": took " (duration(r.summary.finished_at - r.summary.started_at)) }
                }
                @if let Some(l) = lags[i] {
                    circle class=(format!("point lag{failed}")) cx=(format!("{:.1}", x(i)))
                        cy=(format!("{:.1}", y(l))) r="3.5" {
                        title { "run " (r.summary.id) ": lag " (duration(lag_ms(r).unwrap_or(0))) }
                    }
                }
            }
        }
    }
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v` (and above zero).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * power)
}

/// Seconds on the y axis: "0 s", "2.5 s", "120 s".
fn axis_label(v: f64) -> String {
    if v == 0.0 {
        "0 s".to_owned()
    } else if v < 10.0 {
        format!("{v:.1} s")
    } else {
        format!("{v:.0} s")
    }
}

/// One run: a summary line, then (folded unless it is the newest) the source, each
/// destination with its error and the refs the run changed or failed.
fn run_html(run: &RunDetail, open: bool, now: i64) -> Markup {
    let r = &run.summary;
    let report = MirrorReport::deserialize(&run.report).ok();
    html! {
        details.run id=(format!("run-{}", r.id)) open[open] {
            summary {
                strong { "run " (r.id) } " · " (r.trigger.as_str()) " · "
                time datetime=(rfc3339(r.started_at)) { (ago(Some(r.started_at), now)) }
                " · took " (duration(r.finished_at - r.started_at))
                @if let Some(l) = lag_ms(run) { " · lag " (duration(l)) }
                @if let Some(n) = &r.node { " · node " (n) }
                " · " @if r.ok { span.ok { "ok" } } @else { span.bad { "failed" } }
            }
            @match &report {
                None => { p.muted { "The stored report cannot be read." } }
                Some(report) => {
                    p { "source " span.url { (report.source.url) } " · " (report.source.refs) " ref" @if report.source.refs != 1 { "s" } }
                    @if let Some(e) = &report.source.error { (error_html(e)) }
                    @for d in &report.destinations {
                        p { "→ " span.url { (d.url) } " · "
                            @if d.ok { span.ok { "ok" } } @else { span.bad { "failed" } }
                            @if d.verified { span.muted { " · verified by a listing" } }
                        }
                        @if let Some(e) = &d.error { (error_html(e)) }
                        (refs_html(&d.refs))
                    }
                }
            }
        }
    }
}

fn error_html(e: &ErrorReport) -> Markup {
    html! {
        div.error {
            span.kind { (e.kind.as_str()) } ": " span.msg { (e.message) }
            div.hint { "hint: " (e.hint) }
        }
    }
}

/// The refs a run changed or failed; the unchanged ones are counted.
fn refs_html(refs: &[RefReport]) -> Markup {
    let (unchanged, shown): (Vec<&RefReport>, Vec<&RefReport>) = refs
        .iter()
        .partition(|r| r.action == Action::Unchanged && r.is_ok());
    html! {
        @if !shown.is_empty() {
            div.scroll {
                table.refs {
                    thead { tr { th scope="col" { "Ref" } th scope="col" { "Plan" } th scope="col" { "Outcome" }
                                th scope="col" { "Old → new" } th scope="col" { "Why" } } }
                    tbody {
                        @for r in &shown {
                            tr data-ok=(r.is_ok()) {
                                th scope="row" { (r.name) }
                                td { (r.action.as_str()) }
                                td { @match r.outcome {
                                    Some(o) => { @if o.is_ok() { span.ok { (o.as_str()) } } @else { span.bad { (o.as_str()) } } }
                                    None => { span.muted { "—" } }
                                } }
                                td.url { (short(r.old.as_ref().map(|o| o.as_str()))) " → " (short(r.new.as_ref().map(|o| o.as_str()))) }
                                td {
                                    @if let Some(k) = r.kind { span.kind { (k.as_str()) } }
                                    @if let Some(why) = &r.reason { " " span.msg { (why) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !unchanged.is_empty() {
            p.muted { (unchanged.len()) " ref" @if unchanged.len() != 1 { "s" } " unchanged" }
        }
    }
}

/// An object id's first 10 digits; "none" for absent.
fn short(oid: Option<&str>) -> String {
    oid.map_or_else(|| "none".to_owned(), |o| o.chars().take(10).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mirror::Trigger;
    use crate::service::status::{MirrorState, RunSummary};
    use serde_json::json;

    fn run(id: i64, ok: bool, took: i64, waited: Option<i64>) -> RunDetail {
        let started = 1_000_000 + id * 60_000;
        RunDetail {
            summary: RunSummary {
                id,
                mirror: "acme/<app>".into(),
                trigger: Trigger::Webhook,
                started_at: started,
                finished_at: started + took,
                ok,
                node: None,
            },
            oldest_event_at: waited.map(|w| started + took - w),
            report: json!({
                "name": "acme/<app>", "ok": ok, "duration_ms": took,
                "source": {"url": "/src/<app>.git", "ok": true, "refs": 2},
                "destinations": [{
                    "url": "/dst/<app>.git", "ok": ok,
                    "error": if ok { json!(null) } else { json!({"kind": "auth", "message": "<script>alert(1)</script>", "hint": "check"}) },
                    "refs": [
                        {"ref": "refs/heads/main", "action": "update", "outcome": "updated",
                         "old": "1".repeat(40), "new": "2".repeat(40)},
                        {"ref": "refs/tags/v1", "action": "unchanged", "outcome": "unchanged",
                         "old": "3".repeat(40), "new": "3".repeat(40)}
                    ]
                }]
            }),
        }
    }

    fn member() -> MirrorStatus {
        MirrorStatus {
            name: "acme/<app>".into(),
            fleet: Some("acme".into()),
            state: MirrorState::Failing,
            source: "/src/<app>.git".into(),
            failure_streak: 1,
            behind_since: None,
            retry_at: None,
            interrupted: None,
            node: None,
            last_run: None,
            destinations: Vec::new(),
        }
    }

    #[test]
    fn the_mirror_page_plots_every_run_and_lists_changed_refs_and_errors_escaped() {
        let runs = vec![
            run(3, false, 2_500, Some(4_000)),
            run(2, true, 800, None),
            run(1, true, 1_200, Some(1_500)),
        ];
        let page = mirror_page(&member(), &runs, 2_000_000, 10);
        assert_eq!(page.matches("class=\"point duration\"").count(), 2);
        assert_eq!(page.matches("class=\"point lag\"").count(), 1);
        assert_eq!(page.matches("class=\"point duration failed\"").count(), 1);
        assert!(page.contains("<polyline class=\"line duration\""));
        // y axis up to 5 s: the longest value is the 4 s lag.
        assert!(page.contains(">5.0 s<"), "{page}");
        assert!(page.contains("refs/heads/main") && page.contains("1 ref unchanged"));
        assert!(!page.contains("<script>") && page.contains("&lt;script&gt;"));
        assert!(page.contains("acme/&lt;app&gt;"));
        assert!(page.contains("<details class=\"run\" id=\"run-3\" open"));
    }

    #[test]
    fn axis_tops_are_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(4.0), 5.0);
        assert_eq!(nice_ceiling(51.0), 100.0);
    }
}

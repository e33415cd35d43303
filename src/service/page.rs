//! Rendering of what the service knows, for people: the status page (`GET /`), `ferry status`
//! and `ferry runs MIRROR`. Pure: data in, text out; times are Unix milliseconds.
//!
//! Everything shown here may contain untrusted text (URLs, git's error messages, ref names). The
//! page goes through maud, which escapes every splice; the terminal tables drop control
//! characters, so a message cannot move the cursor or recolor the terminal.

use crate::engine::report::{bytes_text, Failure, MirrorReport};
use crate::service::status::{
    DestinationStatus, FleetStatus, MirrorState, MirrorStatus, NodeStatus, RunDetail, RunSummary,
};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The Git LFS objects a run sent, over all its destinations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LfsSent {
    pub objects: u64,
    pub bytes: u64,
}

impl LfsSent {
    /// What the stored report of a run says it sent; `None` when it had no LFS objects to
    /// look at (or cannot be read).
    pub fn of(report: &Value) -> Option<LfsSent> {
        let report = MirrorReport::deserialize(report).ok()?;
        let mut sent: Option<LfsSent> = None;
        for lfs in report.destinations.iter().filter_map(|d| d.lfs.as_ref()) {
            let total = sent.get_or_insert_with(LfsSent::default);
            total.objects += lfs.objects;
            total.bytes += lfs.bytes;
        }
        sent
    }

    fn text(self) -> String {
        format!(
            "{} object{}, {}",
            self.objects,
            if self.objects == 1 { "" } else { "s" },
            bytes_text(self.bytes)
        )
    }
}

/// Which mirrors the page lists, from its query string (`?state=failing&q=app`): a state
/// (empty: any) and a part of the name (empty: any; not case-sensitive).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub q: String,
}

impl Filter {
    fn state(&self) -> Option<MirrorState> {
        MirrorState::parse(self.state.trim())
    }

    fn is_active(&self) -> bool {
        self.state().is_some() || !self.q.trim().is_empty()
    }

    fn matches(&self, m: &MirrorStatus) -> bool {
        let q = self.q.trim().to_lowercase();
        self.state().is_none_or(|s| s == m.state)
            && (q.is_empty() || m.name.to_lowercase().contains(&q))
    }

    /// The query string of this filter with another state.
    fn with_state(&self, state: Option<MirrorState>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("state", state.map_or("", MirrorState::as_str));
        if !self.q.trim().is_empty() {
            query.append_pair("q", self.q.trim());
        }
        format!("/?{}", query.finish())
    }
}

/// What the page groups its mirrors by, beyond the mirrors themselves: each fleet's last
/// discovery, and the filter from the query string.
#[derive(Debug, Default)]
pub struct Listing<'a> {
    pub fleets: &'a [FleetStatus],
    pub filter: Filter,
}

/// The mirrors of the config file, or of one fleet, on the page.
struct Group<'a> {
    /// The element id: `group-configured`, `group-<fleet>`.
    id: String,
    title: String,
    fleet: Option<&'a FleetStatus>,
    is_fleet: bool,
    mirrors: Vec<&'a MirrorStatus>,
}

/// The config file's mirrors first (when there are any, or no fleet), then each fleet's
/// members, by fleet name.
fn groups<'a>(mirrors: &'a [MirrorStatus], fleets: &'a [FleetStatus]) -> Vec<Group<'a>> {
    let mut names: Vec<&str> = mirrors.iter().filter_map(|m| m.fleet.as_deref()).collect();
    names.extend(fleets.iter().map(|f| f.name.as_str()));
    names.sort_unstable();
    names.dedup();
    let configured: Vec<&MirrorStatus> = mirrors.iter().filter(|m| m.fleet.is_none()).collect();
    let mut out = Vec::new();
    if !configured.is_empty() || names.is_empty() {
        out.push(Group {
            id: "group-configured".to_owned(),
            title: "Mirrors".to_owned(),
            fleet: None,
            is_fleet: false,
            mirrors: configured,
        });
    }
    for name in names {
        out.push(Group {
            id: format!("group-{name}"),
            title: format!("Fleet {name}"),
            fleet: fleets.iter().find(|f| f.name == name),
            is_fleet: true,
            mirrors: mirrors
                .iter()
                .filter(|m| m.fleet.as_deref() == Some(name))
                .collect(),
        });
    }
    out
}

const STATES: [MirrorState; 5] = [
    MirrorState::Idle,
    MirrorState::Queued,
    MirrorState::Syncing,
    MirrorState::Failing,
    MirrorState::Diverged,
];

/// The status page. `now` is Unix ms. Server-rendered, no JavaScript needed, refreshes itself
/// every `refresh_seconds` (meta refresh). `nodes`: the nodes sharing the store (shown when
/// there are several). `lfs`: what the recent runs sent of Git LFS objects, by run id.
/// Mirrors are grouped (the config file's, then each fleet's) with counts per state, and
/// listed as `listing.filter` asks.
pub fn status_page(
    mirrors: &[MirrorStatus],
    recent_runs: &[RunSummary],
    nodes: &[NodeStatus],
    lfs: &BTreeMap<i64, LfsSent>,
    listing: &Listing<'_>,
    now: i64,
    refresh_seconds: u32,
) -> String {
    let t = Totals::of(mirrors);
    let filter = &listing.filter;
    let groups = groups(mirrors, listing.fleets);
    let shown = mirrors.iter().filter(|m| filter.matches(m)).count();
    let generated = rfc3339(now);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head("ferry status", refresh_seconds))
            body {
                main.wrap {
                    header {
                        h1 { "ferry status" }
                        p.totals.(t.class()) { (t.sentence()) }
                        p.muted {
                            "Generated at " time datetime=(generated) { (generated) }
                            " · refreshes every " (refresh_seconds) " s"
                        }
                    }
                    (filter_form(filter, shown, mirrors.len()))
                    @for g in &groups {
                        (group_html(g, filter, now))
                    }
                    @if nodes.len() > 1 {
                        section aria-labelledby="nodes-heading" {
                            h2 #nodes-heading { "Nodes" }
                            (nodes_html(nodes, now))
                        }
                    }
                    section aria-labelledby="runs-heading" {
                        h2 #runs-heading { "Recent runs" }
                        @if recent_runs.is_empty() {
                            p.muted { "No runs yet." }
                        } @else {
                            (runs_html(recent_runs, lfs, now))
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}

/// A page's `<head>`: its title, the style sheet, and a refresh every `refresh_seconds`.
pub(super) fn head(title: &str, refresh_seconds: u32) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta http-equiv="refresh" content=(refresh_seconds);
            title { (title) }
            style { (PreEscaped(CSS)) }
        }
    }
}

/// The nodes sharing the store and their last heartbeats.
fn nodes_html(nodes: &[NodeStatus], now: i64) -> Markup {
    html! {
        table.nodes {
            thead { tr { th scope="col" { "Node" } th scope="col" { "Version" } th scope="col" { "Last heartbeat" } } }
            tbody {
                @for n in nodes {
                    tr id=(format!("node-{}", n.id)) {
                        th scope="row" { (n.id) }
                        td { (n.version) }
                        td { (ago(Some(n.heartbeat_at), now)) }
                    }
                }
            }
        }
    }
}

/// One line naming the nodes sharing the store and their last heartbeats, for `ferry status`
/// (empty with a single node).
pub fn nodes_line(nodes: &[NodeStatus], now: i64) -> String {
    if nodes.len() < 2 {
        return String::new();
    }
    let listed: Vec<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "{} (heartbeat {})",
                clean(&n.id),
                ago(Some(n.heartbeat_at), now)
            )
        })
        .collect();
    format!("nodes: {}\n", listed.join(", "))
}

/// The filter: a state and a part of the name, sent as a GET form (no script).
fn filter_form(filter: &Filter, shown: usize, all: usize) -> Markup {
    let state = filter.state();
    html! {
        form.filter method="get" action="/" role="search" {
            label { "State "
                select name="state" {
                    option value="" selected[state.is_none()] { "any" }
                    @for s in STATES {
                        option value=(s.as_str()) selected[state == Some(s)] { (state_label(s)) }
                    }
                }
            }
            label { "Name "
                input type="search" name="q" value=(filter.q) placeholder="part of the name";
            }
            button type="submit" { "Filter" }
            @if filter.is_active() {
                " " a href="/" { "clear" }
                span.muted { " · showing " (shown) " of " (all) }
            }
        }
    }
}

/// A group: its heading, counts per state (each a link to that filter), a fleet's last
/// discovery, and the table of its mirrors the filter keeps.
fn group_html(g: &Group<'_>, filter: &Filter, now: i64) -> Markup {
    let count = |s: MirrorState| g.mirrors.iter().filter(|m| m.state == s).count();
    let shown: Vec<&MirrorStatus> = g
        .mirrors
        .iter()
        .copied()
        .filter(|m| filter.matches(m))
        .collect();
    let heading = format!("{}-heading", g.id);
    html! {
        section.group id=(g.id) aria-labelledby=(heading)
            data-total=(g.mirrors.len()) data-idle=(count(MirrorState::Idle))
            data-queued=(count(MirrorState::Queued)) data-syncing=(count(MirrorState::Syncing))
            data-failing=(count(MirrorState::Failing)) data-diverged=(count(MirrorState::Diverged)) {
            h2 id=(heading) { (g.title) " " span.muted.count { "(" (g.mirrors.len()) ")" } }
            p.counts {
                @for s in STATES {
                    @let n = count(s);
                    a.badge.(if n > 0 { state_class(s) } else { "grey" }) href=(filter.with_state(Some(s))) {
                        (n) " " (state_label(s))
                    }
                    " "
                }
            }
            @if g.is_fleet {
                (discovery_html(g.fleet, now))
            }
            @if g.mirrors.is_empty() {
                p.muted { @if g.is_fleet { "No members." } @else { "No mirrors configured." } }
            } @else if shown.is_empty() {
                p.muted { "No mirror here matches the filter." }
            } @else {
                (mirrors_table(&shown, now))
            }
        }
    }
}

/// A fleet's last discovery: when, and what went wrong.
fn discovery_html(fleet: Option<&FleetStatus>, now: i64) -> Markup {
    html! {
        @match fleet {
            None => { p.muted.discovery { "Not discovered yet." } }
            Some(f) => {
                @if let Some(e) = &f.error {
                    p.bad.discovery {
                        "discovery failed " (ago(Some(f.attempted_at), now)) ": " span.msg { (e) }
                        " — its known members go on syncing"
                        @if let Some(ok) = f.succeeded_at { " (last discovered " (ago(Some(ok), now)) ")" }
                    }
                } @else {
                    p.muted.discovery {
                        "discovered " (ago(Some(f.attempted_at), now))
                        @if let Some(node) = &f.node { " by " (node) }
                        " · " (f.members) " members"
                    }
                }
                @if !f.problems.is_empty() {
                    details.problems {
                        summary.bad { (f.problems.len()) " problem" @if f.problems.len() != 1 { "s" } " in the last discovery" }
                        ul { @for p in &f.problems { li.msg { (p) } } }
                    }
                }
            }
        }
    }
}

fn mirrors_table(mirrors: &[&MirrorStatus], now: i64) -> Markup {
    html! {
        div.scroll {
            table.mirrors {
                thead {
                    tr {
                        th scope="col" { "Mirror / destination" }
                        th scope="col" { "State" }
                        th scope="col" { "Lag / last success" }
                        th scope="col" { "Last run / last error" }
                    }
                }
                @for m in mirrors {
                    tbody {
                        (mirror_row(m, now))
                        @for d in &m.destinations {
                            (destination_row(d, now))
                        }
                    }
                }
            }
        }
    }
}

/// The address of a mirror's own page: `/mirrors/` and its name, each `/`-separated part
/// percent-encoded.
pub(super) fn mirror_href(name: &str) -> String {
    const PART: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let parts: Vec<String> = name
        .split('/')
        .map(|p| percent_encoding::utf8_percent_encode(p, PART).to_string())
        .collect();
    format!("/mirrors/{}", parts.join("/"))
}

pub(super) fn mirror_row(m: &MirrorStatus, now: i64) -> Markup {
    let state = m.state.as_str();
    html! {
        tr.mirror id=(format!("mirror-{}", m.name)) data-state=(state) {
            th scope="row" {
                a.name href=(mirror_href(&m.name)) { (m.name) }
                div.muted.url { (m.source) }
            }
            td {
                span.badge.(state_class(m.state)) { (state_label(m.state)) }
                @if m.failure_streak > 0 {
                    div.muted { (streak(m.failure_streak)) }
                }
                @if let Some(at) = m.retry_at {
                    div.muted { "retry " (until(at, now)) }
                }
                @if let Some(why) = &m.interrupted {
                    div.bad { "last run not recorded: " (why) }
                }
                @if let Some(node) = &m.node {
                    div.muted.node { "node " (node) }
                }
            }
            td { (lag(m, now)) }
            td {
                @match &m.last_run {
                    Some(r) => {
                        (ago(Some(r.finished_at), now)) " · " (r.trigger.as_str()) " · "
                        @if r.ok { span.ok { "ok" } } @else { span.bad { "failed" } }
                        " · " (duration(r.finished_at - r.started_at))
                    }
                    None => { span.muted { "no run yet" } }
                }
            }
        }
    }
}

pub(super) fn destination_row(d: &DestinationStatus, now: i64) -> Markup {
    let (class, label) = destination_state(d);
    html! {
        tr.dest {
            td.url { span.arrow aria-hidden="true" { "↳ " } (d.url) }
            td { span.badge.small.(class) { (label) } }
            td { "last success " (ago(d.last_success_at, now)) }
            td {
                @match &d.last_error {
                    Some(e) => {
                        span.kind { (e.kind.as_str()) } ": " span.msg { (e.message) }
                        div.hint { "hint: " (e.hint) }
                    }
                    None => { span.muted { "no error" } }
                }
            }
        }
    }
}

fn runs_html(runs: &[RunSummary], lfs: &BTreeMap<i64, LfsSent>, now: i64) -> Markup {
    html! {
        div.scroll {
            table.runs {
                thead {
                    tr {
                        th scope="col" { "Mirror" }
                        th scope="col" { "Trigger" }
                        th scope="col" { "When" }
                        th scope="col" { "Duration" }
                        th scope="col" { "LFS sent" }
                        th scope="col" { "Result" }
                    }
                }
                tbody {
                    @for r in runs {
                        tr data-ok=(r.ok) {
                            th scope="row" { a.name href=(mirror_href(&r.mirror)) { (r.mirror) } }
                            td { (r.trigger.as_str()) }
                            td { time datetime=(rfc3339(r.started_at)) { (ago(Some(r.started_at), now)) } }
                            td { (duration(r.finished_at - r.started_at)) }
                            td {
                                @match lfs.get(&r.id) {
                                    Some(sent) => { (sent.text()) }
                                    None => { span.muted { "—" } }
                                }
                            }
                            td {
                                @if r.ok { span.ok { "ok" } } @else { span.bad { "failed" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

const CSS: &str = "\
:root{--fg:#1f2328;--muted:#656d76;--bg:#fff;--line:#d0d7de;--sub:#f6f8fa;\
--green:#1a7f37;--green-bg:#dafbe1;--blue:#0969da;--blue-bg:#ddf4ff;\
--red:#cf222e;--red-bg:#ffebe9;--amber:#9a6700;--amber-bg:#fff8c5;--grey-bg:#eaeef2}\
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#8d96a0;--bg:#0d1117;\
--line:#30363d;--sub:#161b22;--green:#3fb950;--green-bg:#12261e;--blue:#58a6ff;\
--blue-bg:#121d2f;--red:#f85149;--red-bg:#25171c;--amber:#d29922;--amber-bg:#272115;\
--grey-bg:#21262d}}\
*{box-sizing:border-box}\
body{margin:0;font:14px/1.45 system-ui,-apple-system,\"Segoe UI\",sans-serif;color:var(--fg);background:var(--bg)}\
.wrap{max-width:1100px;margin:0 auto;padding:16px}\
h1{font-size:1.4em;margin:0 0 4px}h2{font-size:1.1em;margin:24px 0 8px}\
p{margin:4px 0}\
.totals{font-weight:600}.totals.attention{color:var(--red)}\
.muted,.hint{color:var(--muted)}.hint{font-size:.9em;margin-top:2px}\
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}\
table{border-collapse:collapse;width:100%;min-width:640px}\
th,td{text-align:left;vertical-align:top;padding:6px 8px;border-bottom:1px solid var(--line)}\
thead th{font-size:.85em;color:var(--muted);font-weight:600;white-space:nowrap}\
tbody th{font-weight:600}\
tr.dest td{background:var(--sub);font-size:.92em;border-bottom-style:dashed}\
tr.dest td.url{padding-left:20px}\
.url,.msg{overflow-wrap:anywhere;word-break:break-word}\
.msg{white-space:pre-wrap;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em}\
.kind{font-weight:600}\
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:.85em;font-weight:600;white-space:nowrap}\
.badge.small{padding:0 6px;font-size:.8em}\
.green{color:var(--green);background:var(--green-bg)}\
.blue{color:var(--blue);background:var(--blue-bg)}\
.red{color:var(--red);background:var(--red-bg)}\
.amber{color:var(--amber);background:var(--amber-bg)}\
.grey{color:var(--muted);background:var(--grey-bg)}\
.ok{color:var(--green);font-weight:600}.bad{color:var(--red);font-weight:600}\
a{color:var(--blue)}a.name{color:inherit;font-weight:600}\
form.filter{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center;margin:16px 0 0}\
form.filter select,form.filter input,form.filter button{font:inherit;padding:3px 6px}\
p.counts a.badge{text-decoration:none;margin:2px 0}\
section.group{margin-top:8px}.discovery{font-size:.92em}\
details.problems ul{margin:4px 0;padding-left:20px}\
svg.plot{width:100%;max-width:760px;height:auto;border:1px solid var(--line);border-radius:6px}\
svg.plot text{fill:var(--muted);font-size:11px}svg.plot .axis{stroke:var(--line)}\
svg.plot .line{fill:none;stroke-width:2}svg.plot .duration{stroke:var(--blue)}\
svg.plot .lag{stroke:var(--amber)}svg.plot .point{fill:var(--bg);stroke-width:2}\
svg.plot .point.failed{fill:var(--red)}\
.legend .duration{color:var(--blue)}.legend .lag{color:var(--amber)}\
details.run{border-bottom:1px solid var(--line);padding:6px 0}details.run summary{cursor:pointer}\
.error{color:var(--red)}table.refs{min-width:0;margin:4px 0 8px}\
";

/// How many mirrors are in each group the header counts.
struct Totals {
    all: usize,
    in_sync: usize,
    failing: usize,
    diverged: usize,
    busy: usize,
}

impl Totals {
    fn of(mirrors: &[MirrorStatus]) -> Totals {
        let count = |f: fn(MirrorState) -> bool| mirrors.iter().filter(|m| f(m.state)).count();
        Totals {
            all: mirrors.len(),
            in_sync: count(|s| s == MirrorState::Idle),
            failing: count(|s| s == MirrorState::Failing),
            diverged: count(|s| s == MirrorState::Diverged),
            busy: count(|s| matches!(s, MirrorState::Queued | MirrorState::Syncing)),
        }
    }

    fn sentence(&self) -> String {
        format!(
            "{} mirror{}: {} in sync, {} failing, {} diverged, {} queued/syncing",
            self.all,
            if self.all == 1 { "" } else { "s" },
            self.in_sync,
            self.failing,
            self.diverged,
            self.busy
        )
    }

    fn class(&self) -> &'static str {
        if self.failing + self.diverged > 0 {
            "attention"
        } else {
            "calm"
        }
    }
}

pub(super) fn state_label(s: MirrorState) -> &'static str {
    match s {
        MirrorState::Idle => "in sync",
        MirrorState::Queued => "queued",
        MirrorState::Syncing => "syncing",
        MirrorState::Failing => "failing",
        MirrorState::Diverged => "diverged",
    }
}

pub(super) fn state_class(s: MirrorState) -> &'static str {
    match s {
        MirrorState::Idle => "green",
        MirrorState::Queued | MirrorState::Syncing => "blue",
        MirrorState::Failing => "red",
        MirrorState::Diverged => "amber",
    }
}

fn destination_state(d: &DestinationStatus) -> (&'static str, &'static str) {
    match &d.last_error {
        Some(e) if e.kind == crate::model::kind::ErrorKind::Diverged => ("amber", "diverged"),
        Some(_) => ("red", "error"),
        None if d.last_success_at.is_some() => ("green", "ok"),
        None => ("grey", "never synced"),
    }
}

fn streak(n: u32) -> String {
    if n == 1 {
        "1 failed run".to_owned()
    } else {
        format!("{n} failed runs in a row")
    }
}

pub(super) fn lag(m: &MirrorStatus, now: i64) -> String {
    match m.behind_since {
        None => "up to date".to_owned(),
        Some(t) => format!("behind {}", span(now - t)),
    }
}

/// "3s ago", "5m ago", "2h ago", "4d ago"; "never" for None. Times in the future (clock skew)
/// count as now.
pub fn ago(then: Option<i64>, now: i64) -> String {
    match then {
        None => "never".to_owned(),
        Some(t) => format!("{} ago", span(now - t)),
    }
}

/// "in 30s", "in 5m"; "now" once due.
fn until(at: i64, now: i64) -> String {
    if at <= now {
        "now".to_owned()
    } else {
        format!("in {}", span(at - now))
    }
}

/// A coarse span in its largest whole unit: "3s", "5m", "2h", "4d".
fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

/// "850 ms", "12.3 s", "4m 10s", "2h 5m". Negative durations count as zero.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        // Tenths, truncated: 59_999 ms is "59.9 s", never "60.0 s".
        format!("{}.{} s", ms / 1_000, ms % 1_000 / 100)
    } else if ms < 3_600_000 {
        let s = ms / 1_000;
        format!("{}m {}s", s / 60, s % 60)
    } else {
        let m = ms / 60_000;
        format!("{}h {}m", m / 60, m % 60)
    }
}

/// RFC 3339 UTC, seconds precision: "2024-05-01T12:34:56Z".
pub(super) fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The same at a terminal, for `ferry status`: one line per mirror (name, state, lag, last run
/// age/result, failure streak) and an indented line per destination (url, last success age, last
/// error kind + message), then the hint of each error once. Plain text, aligned columns, no
/// colors.
pub fn status_table(mirrors: &[MirrorStatus], now: i64) -> String {
    if mirrors.is_empty() {
        return "no mirrors\n".to_owned();
    }
    let mut lines: Vec<Line> = vec![Line::Mirror(
        [
            "MIRROR", "STATE", "LAG", "LAST RUN", "TRIGGER", "RESULT", "TOOK", "STREAK",
        ]
        .map(str::to_owned)
        .to_vec(),
    )];
    let mut hints = Hints::default();
    for m in mirrors {
        let mut state = state_label(m.state).to_owned();
        if let Some(at) = m.retry_at {
            state.push_str(&format!(", retry {}", until(at, now)));
        }
        if let Some(node) = &m.node {
            state.push_str(&format!(" @{}", clean(node)));
        }
        let (age, trigger, result, took) = match &m.last_run {
            Some(r) => (
                ago(Some(r.finished_at), now),
                r.trigger.as_str().to_owned(),
                if r.ok { "ok" } else { "FAILED" }.to_owned(),
                duration(r.finished_at - r.started_at),
            ),
            None => ("never".to_owned(), "-".into(), "-".into(), "-".into()),
        };
        lines.push(Line::Mirror(vec![
            clean(&m.name),
            state,
            lag(m, now),
            age,
            trigger,
            result,
            took,
            m.failure_streak.to_string(),
        ]));
        if let Some(why) = &m.interrupted {
            lines.push(Line::Text(format!(
                "  last run not recorded: {}",
                clean(why)
            )));
        }
        for d in &m.destinations {
            let error = match &d.last_error {
                Some(e) => {
                    hints.add(e.kind.as_str(), &e.hint);
                    format!("{}: {}", e.kind, clean(&e.message))
                }
                None => String::new(),
            };
            lines.push(Line::Dest(vec![
                format!("-> {}", clean(&d.url)),
                format!("last success {}", ago(d.last_success_at, now)),
                error,
            ]));
        }
    }
    let mut out = align(&lines);
    hints.render(&mut out);
    out
}

/// Run history for `ferry runs MIRROR`: one line per run (id, trigger, started age, duration,
/// ok/FAILED) and, for failed runs, the failing destinations/refs with kind and reason from the
/// stored report JSON; then the hint of each error once.
pub fn runs_table(runs: &[RunDetail], now: i64) -> String {
    if runs.is_empty() {
        return "no runs\n".to_owned();
    }
    let mut lines: Vec<Line> = vec![Line::Mirror(
        ["RUN", "TRIGGER", "STARTED", "TOOK", "NODE", "RESULT"]
            .map(str::to_owned)
            .to_vec(),
    )];
    let mut hints = Hints::default();
    for run in runs {
        let r = &run.summary;
        lines.push(Line::Mirror(vec![
            r.id.to_string(),
            r.trigger.as_str().to_owned(),
            ago(Some(r.started_at), now),
            duration(r.finished_at - r.started_at),
            r.node.as_deref().map_or_else(|| "-".to_owned(), clean),
            if r.ok { "ok" } else { "FAILED" }.to_owned(),
        ]));
        if let Some(sent) = LfsSent::of(&run.report) {
            lines.push(Line::Text(format!("  lfs: {} sent", sent.text())));
        }
        if !r.ok {
            let details = failure_details(&run.report, &mut hints);
            if details.is_empty() {
                lines.push(Line::Text(
                    "  (the stored report names no failure)".to_owned(),
                ));
            }
            lines.extend(details.into_iter().map(Line::Text));
        }
    }
    let mut out = align(&lines);
    hints.render(&mut out);
    out
}

/// The failing parts of a stored `MirrorReport` JSON, one indented line each (from
/// [`MirrorReport::failures`]). A report that cannot be read names no failure.
fn failure_details(report: &Value, hints: &mut Hints) -> Vec<String> {
    let Ok(report) = MirrorReport::deserialize(report) else {
        return Vec::new();
    };
    let failures = report.failures();
    let mut out = Vec::new();
    let mut i = 0;
    while i < failures.len() {
        let f = &failures[i];
        let kind = f.error.kind.as_str();
        let url = clean(f.place);
        if f.reference.is_none() {
            hints.add(kind, &f.error.hint);
            let role = if f.is_source { "source " } else { "-> " };
            out.push(format!(
                "  {role}{url}: {kind}: {}",
                clean(&f.error.message)
            ));
            i += 1;
            continue;
        }
        // A destination's failing refs: a count, then one line each.
        let refs: Vec<&Failure<'_>> = failures[i..]
            .iter()
            .take_while(|g| g.place == f.place && g.reference.is_some())
            .collect();
        out.push(format!(
            "  -> {url}: {} ref{} failed",
            refs.len(),
            if refs.len() == 1 { "" } else { "s" }
        ));
        for g in &refs {
            let Some(r) = g.reference else { continue };
            let outcome = r.outcome.map_or("failed", |o| o.as_str());
            let mut line = format!("     {}: {outcome}", clean(&r.name));
            if let Some(kind) = r.kind {
                line.push_str(&format!(" ({kind})"));
                if let Some(h) = &r.hint {
                    hints.add(kind.as_str(), h);
                }
            }
            if let Some(reason) = &r.reason {
                line.push_str(&format!(": {}", clean(reason)));
            }
            out.push(line);
        }
        i += refs.len();
    }
    out
}

/// Untrusted text for a terminal line: line breaks and tabs become spaces, other control
/// characters (escape sequences) are dropped.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars() {
        if matches!(c, '\n' | '\r' | '\t') {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// A row of a terminal table. Rows of the same variant share column widths.
enum Line {
    /// Top-level row (a mirror, a run, or the header).
    Mirror(Vec<String>),
    /// Indented destination row of `ferry status`.
    Dest(Vec<String>),
    /// Free text, not aligned.
    Text(String),
}

fn align(lines: &[Line]) -> String {
    fn widths<'a>(rows: impl Iterator<Item = &'a Vec<String>>) -> Vec<usize> {
        let mut w: Vec<usize> = Vec::new();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                let n = cell.chars().count();
                match w.get_mut(i) {
                    Some(x) => *x = (*x).max(n),
                    None => w.push(n),
                }
            }
        }
        w
    }
    fn row(out: &mut String, indent: &str, cells: &[String], w: &[usize]) {
        let mut line = indent.to_owned();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = w[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let top = widths(lines.iter().filter_map(|l| match l {
        Line::Mirror(c) => Some(c),
        _ => None,
    }));
    let dest = widths(lines.iter().filter_map(|l| match l {
        Line::Dest(c) => Some(c),
        _ => None,
    }));
    let mut out = String::new();
    for l in lines {
        match l {
            Line::Mirror(c) => row(&mut out, "", c, &top),
            Line::Dest(c) => row(&mut out, "  ", c, &dest),
            Line::Text(t) => {
                out.push_str(t);
                out.push('\n');
            }
        }
    }
    out
}

/// Hints in first-seen order, each distinct hint once.
#[derive(Default)]
struct Hints(Vec<(String, String)>);

impl Hints {
    fn add(&mut self, kind: &str, hint: &str) {
        let hint = clean(hint);
        if !hint.is_empty() && !self.0.iter().any(|(_, h)| *h == hint) {
            self.0.push((kind.to_owned(), hint));
        }
    }

    fn render(&self, out: &mut String) {
        if self.0.is_empty() {
            return;
        }
        out.push_str("\nhints:\n");
        for (kind, hint) in &self.0 {
            let _ = writeln!(out, "  {kind}: {hint}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::report::ErrorReport;
    use crate::model::kind::ErrorKind;
    use crate::model::mirror::Trigger;

    const NOW: i64 = 1_700_000_000_000;

    fn run(id: i64, mirror: &str, ok: bool) -> RunSummary {
        RunSummary {
            id,
            mirror: mirror.to_owned(),
            trigger: Trigger::Webhook,
            started_at: NOW - 65_000,
            finished_at: NOW - 60_000,
            ok,
            node: Some("ferry-a".to_owned()),
        }
    }

    fn dest(url: &str, error: Option<ErrorReport>) -> DestinationStatus {
        DestinationStatus {
            url: url.to_owned(),
            last_success_at: Some(NOW - 7_200_000),
            last_attempt_at: Some(NOW - 60_000),
            last_error: error,
            lag_seconds: 0.0,
        }
    }

    fn mirror(
        name: &str,
        state: MirrorState,
        destinations: Vec<DestinationStatus>,
    ) -> MirrorStatus {
        let failing = state == MirrorState::Failing;
        MirrorStatus {
            name: name.to_owned(),
            fleet: None,
            state,
            source: format!("https://src.example/{name}.git"),
            failure_streak: if failing { 3 } else { 0 },
            behind_since: failing.then_some(NOW - 120_000),
            retry_at: None,
            interrupted: None,
            node: Some("ferry-a".to_owned()),
            last_run: Some(run(1, name, !failing)),
            destinations,
        }
    }

    fn fleet() -> Vec<MirrorStatus> {
        let auth = || ErrorReport::new(ErrorKind::Auth, "Authentication failed");
        vec![
            mirror(
                "alpha",
                MirrorState::Idle,
                vec![dest("https://a.example/alpha.git", None)],
            ),
            mirror(
                "beta",
                MirrorState::Failing,
                vec![
                    dest("https://b.example/beta.git", Some(auth())),
                    dest("ssh://git@c.example/beta-long-name.git", Some(auth())),
                ],
            ),
            mirror("gamma", MirrorState::Diverged, vec![]),
            mirror("delta", MirrorState::Syncing, vec![]),
        ]
    }

    /// The HTML of the element with `id`, up to its closing `</tr>`.
    fn row<'a>(page: &'a str, id: &str) -> &'a str {
        let start = page.find(&format!("id=\"{id}\"")).expect("row present");
        let end = start + page[start..].find("</tr>").expect("row closed");
        &page[start..end]
    }

    #[test]
    fn page_escapes_hostile_text() {
        let hostile = ErrorReport::new(ErrorKind::Other, "<script>alert(1)</script> & \"x\"");
        let mut m = mirror(
            "evil",
            MirrorState::Failing,
            vec![dest("https://x/\"><img>", Some(hostile))],
        );
        m.source = "<b>src</b>".to_owned();
        let page = page_of(&[m], &[], &[], 10);
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<img>"));
        assert!(!page.contains("<b>src"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;"));
        // No JavaScript of ours either.
        assert!(!page.to_lowercase().contains("<script"));
    }

    /// The page without fleets, filter or Git LFS objects.
    fn page_of(
        mirrors: &[MirrorStatus],
        runs: &[RunSummary],
        nodes: &[NodeStatus],
        refresh: u32,
    ) -> String {
        let listing = Listing::default();
        status_page(
            mirrors,
            runs,
            nodes,
            &BTreeMap::new(),
            &listing,
            NOW,
            refresh,
        )
    }

    fn member(fleet: &str, name: &str, state: MirrorState) -> MirrorStatus {
        MirrorStatus {
            fleet: Some(fleet.to_owned()),
            ..mirror(&format!("{fleet}/{name}"), state, vec![])
        }
    }

    fn with_fleets() -> (Vec<MirrorStatus>, Vec<FleetStatus>) {
        let mirrors = vec![
            mirror("lone", MirrorState::Idle, vec![]),
            member("acme", "app", MirrorState::Idle),
            member("acme", "team/web", MirrorState::Failing),
            member("acme", "tools", MirrorState::Idle),
            member("<b>", "x", MirrorState::Queued),
        ];
        let fleets = vec![
            FleetStatus {
                name: "acme".into(),
                attempted_at: NOW - 60_000,
                succeeded_at: Some(NOW - 60_000),
                members: 3,
                error: None,
                problems: vec!["team/old: <cannot> delete".into()],
                node: Some("n1".into()),
            },
            FleetStatus {
                name: "empty".into(),
                attempted_at: NOW - 5_000,
                succeeded_at: None,
                members: 0,
                error: Some("cannot list <root>".into()),
                problems: vec![],
                node: None,
            },
        ];
        (mirrors, fleets)
    }

    fn page_with(filter: Filter) -> String {
        let (mirrors, fleets) = with_fleets();
        let listing = Listing {
            fleets: &fleets,
            filter,
        };
        status_page(&mirrors, &[], &[], &BTreeMap::new(), &listing, NOW, 10)
    }

    #[test]
    fn mirrors_are_grouped_by_fleet_with_counts_per_state() {
        let page = page_with(Filter::default());
        let configured = page
            .find("id=\"group-configured\"")
            .expect("configured group");
        let acme = page.find("id=\"group-acme\"").expect("acme group");
        let empty = page
            .find("id=\"group-empty\"")
            .expect("a fleet without members");
        assert!(configured < acme && acme < empty);
        let acme_tag = &page[acme..acme + page[acme..].find('>').unwrap()];
        assert!(acme_tag.contains("data-total=\"3\""), "{acme_tag}");
        assert!(acme_tag.contains("data-idle=\"2\"") && acme_tag.contains("data-failing=\"1\""));
        assert!(page.contains("discovered 1m ago by n1 · 3 members"));
        assert!(page.contains("team/old: &lt;cannot&gt; delete"));
        assert!(page.contains("discovery failed 5s ago"));
        assert!(page.contains("cannot list &lt;root&gt;"));
        // A fleet name from the config and member names from hosts are escaped everywhere.
        assert!(!page.contains("<b>") && page.contains("id=\"group-&lt;b&gt;\""));
        // Each name links to its page, each part percent-encoded.
        assert!(page.contains("href=\"/mirrors/acme/team/web\""));
        assert!(page.contains("href=\"/mirrors/%3Cb%3E/x\""));
        // Each count links to its filter.
        assert!(page.contains("href=\"/?state=failing\""));
    }

    #[test]
    fn the_filter_keeps_the_mirrors_of_a_state_and_a_name_and_the_counts_stay_whole() {
        let failing = page_with(Filter {
            state: "failing".into(),
            q: String::new(),
        });
        assert_eq!(failing.matches("class=\"mirror\"").count(), 1);
        assert!(failing.contains("id=\"mirror-acme/team/web\""));
        assert!(failing.contains("showing 1 of 5"));
        assert!(failing.contains("data-total=\"3\""));
        assert!(failing.contains("<option value=\"failing\" selected>"));
        let named = page_with(Filter {
            state: String::new(),
            q: " TOOLS ".into(),
        });
        assert_eq!(named.matches("class=\"mirror\"").count(), 1);
        assert!(named.contains("id=\"mirror-acme/tools\""));
        assert!(named.contains("href=\"/?state=idle&amp;q=TOOLS\""));
        // An unknown state filters nothing out.
        let any = page_with(Filter {
            state: "bogus".into(),
            q: String::new(),
        });
        assert_eq!(any.matches("class=\"mirror\"").count(), 5);
    }

    #[test]
    fn page_shows_failing_in_the_mirror_row() {
        let page = page_of(&fleet(), &[], &[], 10);
        let beta = row(&page, "mirror-beta");
        assert!(beta.contains("data-state=\"failing\""), "{beta}");
        assert!(beta.contains(">failing<"), "{beta}");
        assert!(beta.contains("behind 2m"));
        assert!(beta.contains("3 failed runs in a row"));
        let alpha = row(&page, "mirror-alpha");
        assert!(
            alpha.contains("in sync") && !alpha.contains("failing"),
            "{alpha}"
        );
        assert!(alpha.contains("up to date"));
        assert!(row(&page, "mirror-gamma").contains(">diverged<"));
        // Destination detail: error kind, message and hint.
        assert!(page.contains("Authentication failed"));
        assert!(page.contains(ErrorKind::Auth.hint()));
        assert!(page.contains("last success 2h ago"));
    }

    #[test]
    fn a_run_without_a_recorded_result_shows_why_on_the_page_and_in_the_table() {
        let mut m = mirror("eps", MirrorState::Queued, vec![]);
        m.retry_at = Some(NOW + 30_000);
        m.interrupted = Some("the sync task panicked: <boom>\x1b[31m".to_owned());
        let page = page_of(std::slice::from_ref(&m), &[], &[], 10);
        let eps = row(&page, "mirror-eps");
        assert!(eps.contains("retry in 30s"), "{eps}");
        assert!(
            eps.contains("last run not recorded: the sync task panicked: &lt;boom&gt;"),
            "{eps}"
        );
        let out = status_table(&[m], NOW);
        assert!(
            out.contains("\n  last run not recorded: the sync task panicked: <boom>[31m\n"),
            "{out}"
        );
        assert!(!out.contains('\x1b'));
    }

    #[test]
    fn the_page_and_status_show_each_mirrors_node_and_the_nodes_heartbeats() {
        let nodes = vec![
            NodeStatus {
                id: "ferry-a".into(),
                started_at: NOW - 600_000,
                heartbeat_at: NOW - 2_000,
                version: "0.1.0".into(),
            },
            NodeStatus {
                id: "ferry-<b>".into(),
                started_at: NOW - 600_000,
                heartbeat_at: NOW - 40_000,
                version: "0.1.0".into(),
            },
        ];
        let page = page_of(&fleet(), &[], &nodes, 10);
        assert!(
            row(&page, "mirror-alpha").contains("node ferry-a"),
            "{page}"
        );
        let listed = row(&page, "node-ferry-&lt;b&gt;");
        assert!(listed.contains("40s ago"), "{listed}");
        assert!(!page_of(&fleet(), &[], &nodes[..1], 10).contains("nodes-heading"));
        let line = nodes_line(&nodes, NOW);
        assert!(line.starts_with("nodes: ferry-a (heartbeat "), "{line}");
        assert!(line.contains("ferry-<b>"), "{line}");
        assert_eq!(nodes_line(&nodes[..1], NOW), "");
        assert!(status_table(&fleet(), NOW).contains("@ferry-a"));
    }

    #[test]
    fn page_head_and_totals() {
        let runs = [run(7, "beta", false), run(6, "alpha", true)];
        let page = page_of(&fleet(), &runs, &[], 15);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<html lang=\"en\">"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"15\">"));
        assert!(page.contains("<title>ferry status</title>"));
        assert!(page.contains("4 mirrors: 1 in sync, 1 failing, 1 diverged, 1 queued/syncing"));
        assert!(page.contains("2023-11-14T22:13:20Z"));
        assert!(page.contains("Recent runs"));
        assert!(page.contains("<th scope=\"col\">"));
        let one = page_of(&fleet()[..1], &[], &[], 15);
        assert!(one.contains("1 mirror: 1 in sync, 0 failing, 0 diverged, 0 queued/syncing"));
        assert!(one.contains("No runs yet."));
        assert!(page_of(&[], &[], &[], 15).contains("No mirrors configured."));
    }

    #[test]
    fn status_table_aligns_and_gives_each_hint_once() {
        let out = status_table(&fleet(), NOW);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("MIRROR"), "{out}");
        // Top-level columns line up: STATE starts at the same column on every mirror line.
        let col = lines[0].find("STATE").unwrap();
        for name in ["alpha", "beta", "gamma", "delta"] {
            let l = lines.iter().find(|l| l.starts_with(name)).unwrap();
            assert_eq!(l.chars().nth(col - 1), Some(' '), "{out}");
            assert_ne!(l.chars().nth(col), Some(' '), "{out}");
        }
        // Destination columns line up too.
        let dests: Vec<&&str> = lines.iter().filter(|l| l.starts_with("  -> ")).collect();
        assert_eq!(dests.len(), 3);
        let at = |l: &str| l.find("last success").unwrap();
        assert!(dests.iter().all(|l| at(l) == at(dests[0])), "{out}");
        assert!(out.contains("auth: Authentication failed"));
        assert_eq!(out.matches(ErrorKind::Auth.hint()).count(), 1, "{out}");
        assert!(out.contains("\nhints:\n"));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("beta") && l.contains("failing") && l.contains("FAILED")));
        assert!(!out.contains('\x1b'));
        assert!(out.lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn status_table_neutralizes_control_characters() {
        let e = ErrorReport::new(ErrorKind::Other, "line one\nline two\x1b[31m red");
        let out = status_table(
            &[mirror("m", MirrorState::Failing, vec![dest("u", Some(e))])],
            NOW,
        );
        assert!(out.contains("other: line one line two[31m red"), "{out}");
        assert!(!out.contains('\x1b'));
    }

    #[test]
    fn runs_table_shows_failures_from_the_report() {
        let failed_report = serde_json::json!({
            "name": "beta", "ok": false, "duration_ms": 5000,
            "source": {"url": "https://src.example/beta.git", "ok": true, "refs": 3},
            "destinations": [
                {"url": "https://ok.example/beta.git", "ok": true, "refs": []},
                {"url": "https://b.example/beta.git", "ok": false,
                 "error": {"kind": "auth", "message": "Authentication failed", "hint": "check the token"},
                 "refs": []},
                {"url": "https://c.example/beta.git", "ok": false, "refs": [
                    {"ref": "refs/heads/main", "action": "update", "outcome": "updated", "old": null, "new": null},
                    {"ref": "refs/heads/dev", "action": "update", "outcome": "rejected", "old": null, "new": null,
                     "kind": "protected", "reason": "pre-receive hook declined", "hint": "allow it"},
                    {"ref": "refs/heads/x", "action": "update", "outcome": "rejected", "old": null, "new": null,
                     "kind": "protected", "reason": "protected branch", "hint": "allow it"}
                ]}
            ]
        });
        let runs = vec![
            RunDetail {
                summary: run(12, "beta", false),
                oldest_event_at: None,
                report: failed_report,
            },
            RunDetail {
                summary: run(11, "beta", true),
                oldest_event_at: None,
                report: serde_json::json!({"ok": true}),
            },
            RunDetail {
                summary: run(10, "beta", false),
                oldest_event_at: None,
                report: Value::Null,
            },
        ];
        let out = runs_table(&runs, NOW);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("RUN"), "{out}");
        let col = lines[0].find("TRIGGER").unwrap();
        let l12 = lines.iter().find(|l| l.starts_with("12 ")).unwrap();
        let l11 = lines.iter().find(|l| l.starts_with("11 ")).unwrap();
        assert_eq!(l12.find("webhook"), Some(col), "{out}");
        assert_eq!(l11.find("webhook"), Some(col), "{out}");
        assert!(
            l12.contains("1m ago") && l12.contains("5.0 s") && l12.ends_with("FAILED"),
            "{out}"
        );
        assert!(l11.ends_with("ok"));
        assert!(out.contains("  -> https://b.example/beta.git: auth: Authentication failed"));
        assert!(out.contains("  -> https://c.example/beta.git: 2 refs failed"));
        assert!(
            out.contains("     refs/heads/dev: rejected (protected): pre-receive hook declined")
        );
        assert!(!out.contains("refs/heads/main"));
        assert!(!out.contains("ok.example"));
        assert!(out.contains("(the stored report names no failure)"));
        assert_eq!(out.matches("allow it").count(), 1, "{out}");
        assert_eq!(out.matches("check the token").count(), 1, "{out}");
    }

    #[test]
    fn ago_cases() {
        assert_eq!(ago(None, NOW), "never");
        assert_eq!(ago(Some(NOW), NOW), "0s ago");
        assert_eq!(ago(Some(NOW + 5_000), NOW), "0s ago");
        assert_eq!(ago(Some(NOW - 3_400), NOW), "3s ago");
        assert_eq!(ago(Some(NOW - 59_999), NOW), "59s ago");
        assert_eq!(ago(Some(NOW - 5 * 60_000 - 30_000), NOW), "5m ago");
        assert_eq!(ago(Some(NOW - 2 * 3_600_000 - 1), NOW), "2h ago");
        assert_eq!(ago(Some(NOW - 4 * 86_400_000 - 5), NOW), "4d ago");
    }

    #[test]
    fn duration_cases() {
        assert_eq!(duration(0), "0 ms");
        assert_eq!(duration(-5), "0 ms");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(1_000), "1.0 s");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(59_999), "59.9 s");
        assert_eq!(duration(60_000), "1m 0s");
        assert_eq!(duration(250_000), "4m 10s");
        assert_eq!(duration(3_600_000 + 5 * 60_000 + 9_000), "1h 5m");
    }
}

//! The service section's table, method notes and target verdicts.

use std::fmt::Write;
use std::time::Duration;

use crate::service::{
    Load, ServiceResults, SyncLog, BURST, HOSTILE_HOOK_CONNECTIONS, HOSTILE_HOOK_RATE, IDLE_SETTLE,
    LOAD_CONNECTIONS, LOAD_RATE, PAGE_CONNECTIONS, PAGE_RATE, REF_POLL, SLOW_CLIENTS,
};
use crate::stats::{ms, percentile, percentile_f64};

const MAX_PROPAGATION_P50_MS: f64 = 300.0;
const MAX_PROPAGATION_P99_MS: f64 = 1000.0;
/// "Faster than hand-tuned git": one node's webhook -> destination.
const FAST_PROPAGATION_P50_MS: f64 = 60.0;
const FAST_PROPAGATION_P99_MS: f64 = 150.0;
const MAX_ACK_P99_MS: f64 = 20.0;
const MAX_HOSTILE_ACK_P99_MS: f64 = 50.0;
const MAX_IDLE_RSS_MIB: f64 = 30.0;
const MAX_BURST_OVER_SINGLE: f64 = 2.5;

/// "p50 12.3, p99 45.6, max 78.9 ms"
pub fn spread(samples: &[Duration]) -> String {
    let p = |q| percentile(samples, q).map_or("n/a".into(), |d| format!("{:.1}", ms(d)));
    format!("p50 {}, p99 {}, max {} ms", p(50.0), p(99.0), p(100.0))
}

/// "ferry's own sync duration_ms (log): p50 88, p99 120, n=100"
pub fn log_note(log: &SyncLog) -> String {
    let p = |q| percentile_f64(&log.durations_ms, q).map_or("n/a".into(), |v| format!("{v:.0}"));
    let failed = if log.failed > 0 {
        format!(", {} FAILED", log.failed)
    } else {
        String::new()
    };
    format!(
        "sync duration_ms in ferry's log: p50 {}, p99 {}, max {}, {} syncs{failed}",
        p(50.0),
        p(99.0),
        p(100.0),
        log.durations_ms.len()
    )
}

fn median(samples: &[Duration]) -> Option<Duration> {
    percentile(samples, 50.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Burst total over single sync, both as medians.
fn burst_ratio(r: &ServiceResults) -> Option<f64> {
    let single = ms(median(&r.burst.singles)?);
    let burst = ms(median(&r.burst.bursts)?);
    (single > 0.0).then(|| burst / single)
}

/// "achieved 49.8 req/s over 5.02 s; 0 not 202, 0 errors; send lag max 1.2 ms"
pub fn load_note(l: &Load, expect: u16) -> String {
    format!(
        "achieved {:.1} req/s over {:.2} s; {} not {expect}, {} errors; send lag max {:.1} ms",
        l.achieved_rate(),
        l.wall.as_secs_f64(),
        l.not_accepted,
        l.errors.len(),
        ms(l.max_send_lag),
    )
}

pub fn table(r: &ServiceResults) -> String {
    let mut out = String::new();
    out.push_str("| measurement | n | result | details |\n|---|--:|---|---|\n");
    let mut row = |what: &str, n: String, result: String, details: String| {
        let _ = writeln!(out, "| {what} | {n} | {result} | {details} |");
    };
    let p = &r.propagation;
    row(
        "webhook -> destination updated (http, 1-commit push)",
        p.samples.len().to_string(),
        spread(&p.samples),
        log_note(&p.log),
    );
    let l = &r.load;
    row(
        &format!("webhook ack at {LOAD_RATE}/s offered (file:// mirror)"),
        (l.latencies.len() + l.not_accepted + l.errors.len()).to_string(),
        spread(&l.latencies),
        format!("{}; {}", load_note(l, 202), log_note(&l.log)),
    );
    let h = &r.hostile;
    row(
        &format!(
            "webhook ack at {HOSTILE_HOOK_RATE}/s with {SLOW_CLIENTS} slow clients and \
             {PAGE_RATE} GET / per s (file:// mirror)"
        ),
        (h.acks.latencies.len() + h.acks.not_accepted + h.acks.errors.len()).to_string(),
        spread(&h.acks.latencies),
        format!(
            "{}; GET /: {}, {}; slow clients open at the end {}, reopened {}; {}",
            load_note(&h.acks, 202),
            spread(&h.pages.latencies),
            load_note(&h.pages, 200),
            h.slow_open,
            h.slow_reopened,
            log_note(&h.acks.log)
        ),
    );
    let m = &r.memory;
    row(
        &format!("idle memory of ferry serve, {} mirrors", m.mirrors),
        "1".into(),
        format!("VmRSS {:.1} MiB", mib(m.rss_kib)),
        format!(
            "VmHWM {:.1} MiB; all {} first syncs done {:.1} s after start; {}",
            mib(m.hwm_kib),
            m.mirrors,
            m.startup.as_secs_f64(),
            log_note(&m.log)
        ),
    );
    let b = &r.burst;
    row(
        "single webhook -> destination updated (http)",
        b.singles.len().to_string(),
        spread(&b.singles),
        String::new(),
    );
    let runs: Vec<String> = b.runs.iter().map(ToString::to_string).collect();
    row(
        &format!("burst of {BURST} webhooks -> last commit on destination (http)"),
        b.bursts.len().to_string(),
        spread(&b.bursts),
        format!(
            "burst/single (medians) {}; sent in median {:.1} ms; runs per burst: {}; {}",
            burst_ratio(r).map_or("n/a".into(), |x| format!("{x:.2}x")),
            median(&b.sending).map_or(0.0, ms),
            runs.join(", "),
            log_note(&b.log)
        ),
    );
    out
}

pub fn methods(r: &ServiceResults) -> String {
    format!(
        "One `ferry serve` (release build, `[serve] listen = \"127.0.0.1:0\"`, default workers) \
         with mirror `http` (smart HTTP through testkit's nginx both ways, WRITER credentials \
         from `password_env`) and mirror `file` (file:// both ways), both copies of the {} repo, \
         poll_interval and reconcile_interval \"0\" (only webhooks trigger syncs); webhooks are \
         GitHub push deliveries signed with `x-hub-signature-256`, every one answered 202; those \
         of a timed push carry its old and new commit ids in `before` and `after`, as GitHub's do (the load parts name main \
         without one).\n\
         - webhook -> destination: a one-commit push to the source (commit-tree + update-ref in \
         the bare repo, dated now), then the clock starts just before POSTing the webhook and \
         stops when the destination's refs/heads/main (loose ref file, else packed-refs; read \
         every ~{} ms) is the new commit; then waits (untimed) for the mirror to be idle.\n\
         - webhook ack: {} s at {LOAD_RATE} req/s open-loop, request i due at start + i x {} ms, \
         sent by client thread i mod {LOAD_CONNECTIONS} on its own keep-alive connection; \
         latency from when the request was due to the end of its response. The syncs these \
         trigger coalesce on the file:// mirror (cheap, so they take little CPU from the \
         service).\n\
         - webhook ack with slow clients: {SLOW_CLIENTS} connections each send the start of a \
         request's headers and never the rest (a thread replaces any the service closes); \
         meanwhile, open loop as above for {} s, webhooks at {HOSTILE_HOOK_RATE}/s over \
         {HOSTILE_HOOK_CONNECTIONS} keep-alive connections and `GET /` at {PAGE_RATE}/s over \
         {PAGE_CONNECTIONS}; the service runs with the default `[serve]` limits.\n\
         - idle memory: a second `ferry serve` with {} file:// mirrors (tiny sources, empty \
         destinations); when GET /api/mirrors shows every mirror idle after its first sync, \
         {} s later VmRSS and VmHWM of the process from /proc/<pid>/status.\n\
         - burst: each round first times a single webhook as above, then makes {BURST} commits \
         in a chain (untimed) and, as fast as possible, moves main to each in turn (one \
         transaction each through a running `git update-ref --stdin`) and POSTs a webhook \
         after each, waiting for its 202; the clock runs from just before the first POST until the destination has \
         the last commit; ratio = median burst / median single (1 untimed warm-up round).\n\
         Dirty pages are flushed (sync(1), untimed) before each part, as in the table above. \
         The service section took {:.1} s.\n",
        r.repo,
        REF_POLL.as_millis(),
        r.counts.load_secs,
        1000 / LOAD_RATE,
        r.counts.load_secs,
        r.memory.mirrors,
        IDLE_SETTLE.as_secs(),
        r.elapsed.as_secs_f64(),
    )
}

/// One target's line: "- **PASS** target: detail".
pub fn verdict(out: &mut String, pass: bool, target: String, detail: String) {
    let status = if pass { "PASS" } else { "MISS" };
    let _ = writeln!(out, "- **{status}** {target}: {detail}");
}

/// The webhook -> destination targets (p50 and p99) over `samples`.
pub fn propagation_targets(out: &mut String, samples: &[Duration], scope: &str) {
    propagation_bounds(
        out,
        samples,
        scope,
        [
            (50.0, MAX_PROPAGATION_P50_MS),
            (99.0, MAX_PROPAGATION_P99_MS),
        ],
    );
}

/// The stricter webhook -> destination targets of one node ("faster than hand-tuned git").
pub fn fast_propagation_targets(out: &mut String, samples: &[Duration]) {
    propagation_bounds(
        out,
        samples,
        "",
        [
            (50.0, FAST_PROPAGATION_P50_MS),
            (99.0, FAST_PROPAGATION_P99_MS),
        ],
    );
}

fn propagation_bounds(
    out: &mut String,
    samples: &[Duration],
    scope: &str,
    bounds: [(f64, f64); 2],
) {
    for (q, max) in bounds {
        let v = percentile(samples, q).map(ms);
        verdict(
            out,
            v.is_some_and(|v| v <= max),
            format!("webhook -> destination{scope} p{q:.0} <= {max:.0} ms"),
            v.map_or("no data".into(), |v| {
                format!("p{q:.0} {v:.1} ms (n={})", samples.len())
            }),
        );
    }
}

/// The webhook ack target (p99, every answer 202) of an open-loop load.
pub fn ack_target(out: &mut String, l: &Load, scope: &str) {
    let ack = percentile(&l.latencies, 99.0).map(ms);
    let clean = l.not_accepted == 0 && l.errors.is_empty();
    verdict(
        out,
        clean && ack.is_some_and(|v| v <= MAX_ACK_P99_MS),
        format!("webhook ack{scope} p99 <= {MAX_ACK_P99_MS:.0} ms at {LOAD_RATE}/s"),
        format!(
            "p99 {} ms, achieved {:.1} req/s, {} not 202, {} errors{}",
            ack.map_or("n/a".into(), |v| format!("{v:.1}")),
            l.achieved_rate(),
            l.not_accepted,
            l.errors.len(),
            l.errors
                .first()
                .map_or(String::new(), |e| format!(" (first: {e})"))
        ),
    );
}

pub fn targets(r: &ServiceResults) -> String {
    let mut out = String::new();
    propagation_targets(&mut out, &r.propagation.samples, "");
    fast_propagation_targets(&mut out, &r.propagation.samples);
    ack_target(&mut out, &r.load, "");
    let mut verdict = |pass: bool, target: String, detail: String| {
        verdict(&mut out, pass, target, detail);
    };
    let h = &r.hostile;
    let ack = percentile(&h.acks.latencies, 99.0).map(ms);
    let clean = h.acks.not_accepted == 0
        && h.acks.errors.is_empty()
        && h.pages.not_accepted == 0
        && h.pages.errors.is_empty();
    verdict(
        clean && ack.is_some_and(|v| v <= MAX_HOSTILE_ACK_P99_MS),
        format!(
            "webhook ack p99 <= {MAX_HOSTILE_ACK_P99_MS:.0} ms with {SLOW_CLIENTS} slow clients \
             and {PAGE_RATE} GET / per s"
        ),
        format!(
            "p99 {} ms (n={}), {} webhooks not 202, {} errors; {} pages not 200, {} errors{}",
            ack.map_or("n/a".into(), |v| format!("{v:.1}")),
            h.acks.latencies.len(),
            h.acks.not_accepted,
            h.acks.errors.len(),
            h.pages.not_accepted,
            h.pages.errors.len(),
            h.acks
                .errors
                .iter()
                .chain(&h.pages.errors)
                .next()
                .map_or(String::new(), |e| format!(" (first: {e})"))
        ),
    );
    let m = &r.memory;
    verdict(
        mib(m.rss_kib) <= MAX_IDLE_RSS_MIB,
        format!(
            "idle RSS of ferry serve with {} mirrors <= {MAX_IDLE_RSS_MIB:.0} MiB",
            m.mirrors
        ),
        format!(
            "VmRSS {:.1} MiB (VmHWM {:.1} MiB)",
            mib(m.rss_kib),
            mib(m.hwm_kib)
        ),
    );
    let ratio = burst_ratio(r);
    verdict(
        ratio.is_some_and(|x| x <= MAX_BURST_OVER_SINGLE),
        format!("burst of {BURST} webhooks <= {MAX_BURST_OVER_SINGLE}x one sync"),
        match ratio {
            Some(x) => format!(
                "{x:.2}x (burst median {:.1} ms / single median {:.1} ms, n={})",
                median(&r.burst.bursts).map_or(0.0, ms),
                median(&r.burst.singles).map_or(0.0, ms),
                r.burst.bursts.len()
            ),
            None => "no data".into(),
        },
    );
    out
}

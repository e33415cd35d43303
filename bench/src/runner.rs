//! The measurement loop for one (repository, transport) pair.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::fixture::{Fixture, Measurement};
use crate::method::Method;
use crate::phases::Profile;
use crate::repos::Generated;
use crate::stats::{ms, Stats};
use crate::transport::Transport;

/// Untimed rounds before the measured ones (page cache, first-use costs).
const WARMUP_ROUNDS: usize = 1;

/// How many rounds each method is measured.
#[derive(Debug, Clone, Copy)]
pub struct Rounds {
    pub runs: usize,
    /// Classic re-clones everything, so on the large repo it gets fewer runs.
    pub classic_runs_large: usize,
}

/// The results of one table row.
pub struct Row {
    pub repo: Generated,
    pub transport: Transport,
    pub stats: BTreeMap<Method, Stats>,
    /// Highest VmHWM of the ferry process over all timed ferry runs.
    pub peak_kib: Option<u64>,
    /// ferry's one-commit sync and no-op, run once more with git calls
    /// logged (see [`profile_round`]).
    pub profiles: Vec<(Method, Profile)>,
}

impl Row {
    pub fn stats(&self, method: Method) -> Option<&Stats> {
        self.stats.get(&method).filter(|s| s.len() > 0)
    }

    fn record(&mut self, method: Method, m: &Measurement) {
        self.stats.entry(method).or_default().push(m.elapsed);
        if let Some(kib) = m.peak_kib {
            self.peak_kib = Some(self.peak_kib.map_or(kib, |p| p.max(kib)));
        }
    }
}

/// Each round: check every destination is in sync (untimed), make ONE new
/// commit on the source, propagate it with each method to that method's own
/// destination (order rotated every round), check it arrived; then time
/// ferry's no-op and one `ls-remote` of the source. Then one untimed
/// [`profile_round`].
pub fn run_row(
    fixture: &mut Fixture,
    repo: &Generated,
    transport: Transport,
    rounds: Rounds,
) -> Result<Row> {
    let mut row = Row {
        repo: repo.clone(),
        transport,
        stats: BTreeMap::new(),
        peak_kib: None,
        profiles: vec![],
    };
    let classic_runs = if repo.spec.large {
        rounds.classic_runs_large.min(rounds.runs)
    } else {
        rounds.runs
    };
    for round in 0..WARMUP_ROUNDS + rounds.runs {
        let timed = round >= WARMUP_ROUNDS;
        let active = active_methods(round, round < WARMUP_ROUNDS + classic_runs);
        let label = if timed {
            format!("run {}/{}", round + 1 - WARMUP_ROUNDS, rounds.runs)
        } else {
            "warm-up".to_string()
        };
        let mut progress = vec![];
        let before = fixture.source_refs()?;
        for &method in &active {
            fixture.check_in_sync(method, &before)?;
        }
        let oid = fixture.new_commit()?;
        for &method in &active {
            let m = fixture.measure(method, &oid)?;
            fixture.check_has(method, &oid)?;
            progress.push(format!("{method} {:.1}", ms(m.elapsed)));
            if timed {
                row.record(method, &m);
            }
        }
        let after = fixture.source_refs()?;
        fixture.check_in_sync(Method::FerryNoop, &after)?;
        fixture.check_in_sync(Method::FerryEventNoop, &after)?;
        for method in [Method::FerryNoop, Method::FerryEventNoop, Method::LsRemote] {
            let m = fixture.measure(method, &oid)?;
            progress.push(format!("{method} {:.1}", ms(m.elapsed)));
            if timed {
                row.record(method, &m);
            }
        }
        eprintln!(
            "  {}/{transport} {label}: {} ms",
            repo.spec.name,
            progress.join(", ")
        );
    }
    row.profiles = profile_round(fixture)?;
    eprintln!(
        "  {}/{transport} profiled: {}",
        repo.spec.name,
        profile_progress(&row.profiles)
    );
    Ok(row)
}

/// "ferry 58.9 ms, 7 git processes; ferry no-op 13.1 ms, 3 git processes"
fn profile_progress(profiles: &[(Method, Profile)]) -> String {
    profiles
        .iter()
        .map(|(method, p)| {
            format!(
                "{method} {:.1} ms, {} git processes",
                ms(p.wall),
                p.calls.len()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One more round for ferry alone, after the timed ones so its debug logging
/// never lands in their figures: a new commit synced (from the command line
/// and as an event naming it), then the no-op, each with every git call
/// logged. Only ferry's destinations follow the source in this round; the
/// row's other destinations are not used again.
fn profile_round(fixture: &mut Fixture) -> Result<Vec<(Method, Profile)>> {
    let before = fixture.source_refs()?;
    fixture.check_in_sync(Method::Ferry, &before)?;
    fixture.check_in_sync(Method::FerryEvent, &before)?;
    let oid = fixture.new_commit()?;
    let sync = fixture.profile(Method::Ferry, &oid)?;
    fixture.check_has(Method::Ferry, &oid)?;
    let event = fixture.profile(Method::FerryEvent, &oid)?;
    fixture.check_has(Method::FerryEvent, &oid)?;
    let after = fixture.source_refs()?;
    fixture.check_in_sync(Method::FerryNoop, &after)?;
    let noop = fixture.profile(Method::FerryNoop, &oid)?;
    Ok(vec![
        (Method::Ferry, sync),
        (Method::FerryEvent, event),
        (Method::FerryNoop, noop),
    ])
}

/// The propagating methods of `round`, rotated so none always goes first.
fn active_methods(round: usize, with_classic: bool) -> Vec<Method> {
    let mut methods: Vec<Method> = Method::PROPAGATING
        .into_iter()
        .filter(|&m| with_classic || m != Method::Classic)
        .collect();
    let len = methods.len();
    methods.rotate_left(round % len);
    methods
}

//! What the service knows about each mirror, as the store returns it and as the API, the
//! status page and `ferry status` show it. Plain data; times are Unix milliseconds.

use crate::engine::report::ErrorReport;
use crate::model::mirror::Trigger;
use serde::{Deserialize, Serialize};

/// A mirror at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorState {
    /// In sync as of the last run; nothing waiting.
    Idle,
    /// A sync is waiting for a worker (or for its retry time).
    Queued,
    /// A sync is running.
    Syncing,
    /// The last run failed (and is not a divergence only).
    Failing,
    /// The last run left refs diverged (destination changed behind ferry's back).
    Diverged,
}

impl MirrorState {
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorState::Idle => "idle",
            MirrorState::Queued => "queued",
            MirrorState::Syncing => "syncing",
            MirrorState::Failing => "failing",
            MirrorState::Diverged => "diverged",
        }
    }

    pub fn parse(s: &str) -> Option<MirrorState> {
        [
            MirrorState::Idle,
            MirrorState::Queued,
            MirrorState::Syncing,
            MirrorState::Failing,
            MirrorState::Diverged,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// One destination of a mirror, as of the last run that reached it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    /// Redacted URL.
    pub url: String,
    pub last_success_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    /// The error of the last attempt, if it failed.
    pub last_error: Option<ErrorReport>,
    /// Seconds this destination has been behind the source; computed when shown (see
    /// [`MirrorStatus::with_lag`]), 0 as stored.
    #[serde(default)]
    pub lag_seconds: f64,
}

/// One finished run, without its per-ref detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: i64,
    pub mirror: String,
    pub trigger: Trigger,
    pub started_at: i64,
    pub finished_at: i64,
    pub ok: bool,
    /// The node that ran it.
    #[serde(default)]
    pub node: Option<String>,
}

/// A fleet's last discovery in `ferry serve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub name: String,
    /// When the last discovery ran.
    pub attempted_at: i64,
    /// When a discovery last found the members (`None`: never since the store knows it).
    pub succeeded_at: Option<i64>,
    /// The members being synced.
    pub members: usize,
    /// Why the last discovery failed as a whole; its known members go on syncing.
    pub error: Option<String>,
    /// What else it reported, one line each (an incomplete listing, a member that could not
    /// be created, ...).
    pub problems: Vec<String>,
    /// The node that ran it.
    pub node: Option<String>,
}

/// A `ferry serve` node using the store, as of its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// The ferry version it runs.
    pub version: String,
}

/// One run with its full report (the `--json` document of that mirror).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub summary: RunSummary,
    /// When the oldest event this run handled arrived (`None`: it handled none, or they were
    /// pruned): the run's lag is from then to its end.
    #[serde(default)]
    pub oldest_event_at: Option<i64>,
    pub report: serde_json::Value,
}

/// A mirror for the API, the page and `ferry status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorStatus {
    pub name: String,
    /// The fleet the mirror is a member of; `None` for a mirror of the config file.
    #[serde(default)]
    pub fleet: Option<String>,
    pub state: MirrorState,
    /// Redacted source URL.
    pub source: String,
    /// Consecutive failed runs (0 after a success).
    pub failure_streak: u32,
    /// When the oldest trigger not yet satisfied by a successful run arrived: how far behind
    /// the destinations may be. `None` when in sync.
    pub behind_since: Option<i64>,
    /// When the next retry is due, for a mirror waiting after a transient failure.
    pub retry_at: Option<i64>,
    /// Why the last run ended without recording a result (it was put back in the queue);
    /// `None` once a run records its result.
    #[serde(default)]
    pub interrupted: Option<String>,
    /// The node running the mirror's sync now, else the node that ran it last (where its
    /// cache is warm).
    #[serde(default)]
    pub node: Option<String>,
    pub last_run: Option<RunSummary>,
    pub destinations: Vec<DestinationStatus>,
}

impl MirrorStatus {
    /// Seconds the mirror has been behind its source at `now` (0 when in sync).
    pub fn lag_seconds(&self, now: i64) -> f64 {
        self.behind_since
            .map_or(0.0, |t| ((now - t).max(0) as f64) / 1000.0)
    }

    /// Fills in each destination's lag at `now`: a destination whose last success came after
    /// the mirror fell behind is in sync; the others are as far behind as the mirror.
    pub fn with_lag(mut self, now: i64) -> MirrorStatus {
        let lag = self.lag_seconds(now);
        let since = self.behind_since;
        for d in &mut self.destinations {
            let caught_up = matches!((d.last_success_at, since), (Some(ok), Some(t)) if ok >= t);
            d.lag_seconds = if caught_up { 0.0 } else { lag };
        }
        self
    }
}

/// A mirror as the API shows it: the stored status plus its lag now.
#[derive(Serialize, Deserialize)]
pub struct MirrorView {
    #[serde(flatten)]
    pub status: MirrorStatus,
    pub lag_seconds: f64,
}

/// The mirror with its lag, and each destination's, at `now`.
pub fn view(status: MirrorStatus, now: i64) -> MirrorView {
    MirrorView {
        lag_seconds: status.lag_seconds(now),
        status: status.with_lag(now),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_that_succeeded_since_the_mirror_fell_behind_has_no_lag() {
        let dest = |ok: Option<i64>| DestinationStatus {
            url: "d".into(),
            last_success_at: ok,
            last_attempt_at: Some(9_000),
            last_error: None,
            lag_seconds: 0.0,
        };
        let m = MirrorStatus {
            name: "m".into(),
            fleet: None,
            state: MirrorState::Failing,
            source: "s".into(),
            failure_streak: 2,
            behind_since: Some(5_000),
            retry_at: None,
            interrupted: None,
            node: None,
            last_run: None,
            destinations: vec![dest(Some(6_000)), dest(Some(1_000)), dest(None)],
        }
        .with_lag(10_000);
        let lags: Vec<f64> = m.destinations.iter().map(|d| d.lag_seconds).collect();
        assert_eq!(lags, [0.0, 5.0, 5.0]);
        assert_eq!(m.lag_seconds(10_000), 5.0);
    }
}

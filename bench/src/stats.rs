//! Median/min over a handful of timed runs.

use std::time::Duration;

/// The samples of one measured operation.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    pub fn push(&mut self, sample: Duration) {
        self.samples.push(sample);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The median (mean of the two middle samples for an even count).
    pub fn median(&self) -> Option<Duration> {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let n = sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(sorted[n / 2]),
            _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
        }
    }

    /// Samples of whole milliseconds, for tests of what is made of them.
    #[cfg(test)]
    pub fn from_millis(ms: &[u64]) -> Stats {
        Stats {
            samples: ms.iter().map(|&m| Duration::from_millis(m)).collect(),
        }
    }

    pub fn min(&self) -> Option<Duration> {
        self.samples.iter().min().copied()
    }

    /// Median in milliseconds, for ratios and the table.
    pub fn median_ms(&self) -> Option<f64> {
        self.median().map(ms)
    }

    pub fn min_ms(&self) -> Option<f64> {
        self.min().map(ms)
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of `samples`: the
/// smallest sample with at least p% of all samples at or below it.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// [`percentile`] of millisecond values.
pub fn percentile_f64(samples: &[f64], p: f64) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_min() {
        assert_eq!(Stats::from_millis(&[]).median(), None);
        assert_eq!(
            Stats::from_millis(&[5, 1, 3]).median(),
            Some(Duration::from_millis(3))
        );
        assert_eq!(
            Stats::from_millis(&[4, 1, 3, 2]).median(),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(
            Stats::from_millis(&[4, 1, 3, 2]).min(),
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&d, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&d, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&d[..3], 99.0), Some(Duration::from_millis(3)));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile_f64(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
    }
}

//! Timing loop and latency statistics, shared by every Rust-side system and
//! applied to the Python peers' raw times, so all rows are summarised alike.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Warm-up, then iterate until both `min_iters` and `budget_s` are reached
/// (or `max_iters`). Mirrored by `Timer` in scripts/bench_peers.py.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Timing {
    pub warmup: usize,
    pub min_iters: usize,
    pub max_iters: usize,
    pub budget_s: f64,
}

impl Timing {
    /// Runs `f` and returns the per-iteration wall times in seconds; the first
    /// error stops the loop.
    pub fn run<E>(&self, mut f: impl FnMut() -> Result<(), E>) -> Result<Vec<f64>, E> {
        for _ in 0..self.warmup {
            f()?;
        }
        let mut times = Vec::new();
        let start = Instant::now();
        while times.len() < self.max_iters {
            let t0 = Instant::now();
            f()?;
            times.push(t0.elapsed().as_secs_f64());
            if times.len() >= self.min_iters && start.elapsed().as_secs_f64() >= self.budget_s {
                break;
            }
        }
        Ok(times)
    }
}

/// Latency percentiles of one measured series, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub iters: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

/// Nearest-rank percentile (`q` in 0..=1) of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Summary {
    pub fn of(times_s: &[f64]) -> Self {
        let mut v: Vec<f64> = times_s.iter().map(|t| t * 1e3).collect();
        v.sort_by(f64::total_cmp);
        Self {
            iters: v.len(),
            p50_ms: percentile(&v, 0.5),
            p90_ms: percentile(&v, 0.9),
            p99_ms: percentile(&v, 0.99),
            mean_ms: v.iter().sum::<f64>() / v.len().max(1) as f64,
        }
    }
}

/// One system's times in one case, round by round.
#[derive(Debug, Clone, Default)]
pub struct Rounds {
    /// Every timed run, all rounds together.
    pub times_s: Vec<f64>,
    /// The median run of each round.
    pub p50_s: Vec<f64>,
}

impl Rounds {
    /// Adds one round's block of runs (an empty block, e.g. a warm-up, adds nothing).
    pub fn push(&mut self, block: &[f64]) {
        if block.is_empty() {
            return;
        }
        let mut v = block.to_vec();
        self.p50_s.push(median(&mut v));
        self.times_s.extend_from_slice(block);
    }
}

/// A ratio between two systems measured in interleaved rounds: the median
/// of the per-round ratios and its bootstrap 95% interval.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    pub rounds: usize,
}

/// Resamples of the bootstrap, and its seed (fixed: the same rounds give the same interval).
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
pub const BOOTSTRAP_SEED: u64 = 17;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Median of the per-round ratios `num[i] / den[i]` (a drift common to both
/// systems of a round cancels in its ratio) with a percentile bootstrap 95%
/// interval of that median over `resamples` resamples of the rounds. `None`
/// when the lengths differ, there are no rounds, or any value is not a
/// positive finite number (a NaN never reaches a verdict).
pub fn ratio_interval(num: &[f64], den: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    use rand::{Rng, SeedableRng};
    if num.len() != den.len() || num.is_empty() || num.iter().chain(den).any(|v| !(v.is_finite() && *v > 0.0)) {
        return None;
    }
    let r: Vec<f64> = num.iter().zip(den).map(|(a, b)| a / b).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut buf = vec![0.0; r.len()];
    let mut meds: Vec<f64> = (0..resamples.max(1))
        .map(|_| {
            for b in buf.iter_mut() {
                *b = r[rng.random_range(0..r.len())];
            }
            median(&mut buf)
        })
        .collect();
    meds.sort_by(f64::total_cmp);
    Some(Interval { median: median(&mut r.clone()), lo: percentile(&meds, 0.025), hi: percentile(&meds, 0.975), rounds: r.len() })
}

/// A target's verdict from a ratio's interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The whole interval is on the good side of the limit.
    Met,
    /// The whole interval is on the bad side.
    Missed,
    /// The interval straddles the limit: this run cannot tell.
    Undecided,
}

impl Verdict {
    /// `at_most`: the ratio must stay under `limit` (latency, time), else above it (throughput).
    pub fn of(iv: &Interval, limit: f64, at_most: bool) -> Self {
        let (good, bad) = if at_most { (iv.hi < limit, iv.lo > limit) } else { (iv.lo > limit, iv.hi < limit) };
        match (good, bad) {
            (true, _) => Verdict::Met,
            (_, true) => Verdict::Missed,
            _ => Verdict::Undecided,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(|i| i as f64).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.9), 90.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        let s = Summary::of(&[0.003, 0.001, 0.002]);
        assert_eq!((s.iters, s.p50_ms, s.p99_ms), (3, 2.0, 3.0));
        assert!((s.mean_ms - 2.0).abs() < 1e-12);
    }

    #[test]
    fn timer_respects_min_and_max_iters() {
        let mut n = 0;
        let t = Timing { warmup: 2, min_iters: 5, max_iters: 7, budget_s: 0.0 };
        let times = t.run(|| -> Result<(), ()> { n += 1; Ok(()) }).unwrap();
        assert_eq!((times.len(), n), (5, 7));
        let t = Timing { warmup: 0, min_iters: 1, max_iters: 4, budget_s: 60.0 };
        assert_eq!(t.run(|| -> Result<(), ()> { Ok(()) }).unwrap().len(), 4);
        assert_eq!(t.run(|| Err::<(), _>("boom")), Err("boom"));
    }

    /// A drift that scales both systems of a round alike cancels: the
    /// interval is the exact ratio, however large the drift.
    #[test]
    fn interleaved_drift_cancels() {
        let drift: Vec<f64> = (0..12).map(|i| 1.0 + 0.1 * i as f64).collect();
        let a: Vec<f64> = drift.iter().map(|d| 0.02 * d).collect();
        let b: Vec<f64> = drift.iter().map(|d| 0.025 * d).collect();
        let iv = ratio_interval(&a, &b, 2000, 1).unwrap();
        for v in [iv.median, iv.lo, iv.hi] {
            assert!((v - 0.8).abs() < 1e-12, "{iv:?}");
        }
        assert_eq!(iv.rounds, 12);
    }

    /// Per-round ratios drawn from a log-normal of known median 1.5: about 95%
    /// of the intervals contain 1.5, the interval narrows with more rounds,
    /// and the same rounds and seed give the same interval.
    #[test]
    fn bootstrap_interval_covers_the_true_median() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut normal = || -> f64 {
            // Box-Muller.
            let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let (trials, n) = (300, 25);
        let mut covered = 0;
        let mut width = 0.0;
        for t in 0..trials {
            let r: Vec<f64> = (0..n).map(|_| 1.5 * (0.1 * normal()).exp()).collect();
            let iv = ratio_interval(&r, &vec![1.0; n], 500, t).unwrap();
            assert!(iv.lo <= iv.median && iv.median <= iv.hi, "{iv:?}");
            covered += (iv.lo <= 1.5 && 1.5 <= iv.hi) as usize;
            width += (iv.hi - iv.lo) / trials as f64;
        }
        let rate = covered as f64 / trials as f64;
        assert!((0.88..=0.99).contains(&rate), "coverage {rate}");
        let r: Vec<f64> = (0..400).map(|_| 1.5 * (0.1 * normal()).exp()).collect();
        let big = ratio_interval(&r, &vec![1.0; 400], 500, 0).unwrap();
        assert!(big.hi - big.lo < 0.5 * width, "400 rounds {:?} vs mean width {width} at {n}", big);
        assert_eq!(ratio_interval(&r, &vec![1.0; 400], 500, 0), Some(big));
    }

    #[test]
    fn verdicts_need_the_whole_interval_on_one_side() {
        let iv = |lo, hi| Interval { median: 0.5 * (lo + hi), lo, hi, rounds: 9 };
        assert_eq!(Verdict::of(&iv(0.8, 0.95), 1.0, true), Verdict::Met);
        assert_eq!(Verdict::of(&iv(0.9, 1.1), 1.0, true), Verdict::Undecided);
        assert_eq!(Verdict::of(&iv(1.05, 1.2), 1.0, true), Verdict::Missed);
        assert_eq!(Verdict::of(&iv(1.05, 1.2), 1.0, false), Verdict::Met);
        assert_eq!(Verdict::of(&iv(0.8, 0.95), 1.0, false), Verdict::Missed);
        assert_eq!(ratio_interval(&[1.0, f64::NAN], &[1.0, 1.0], 10, 0), None);
        assert_eq!(ratio_interval(&[1.0], &[1.0, 1.0], 10, 0), None);
        assert_eq!(ratio_interval(&[1.0], &[0.0], 10, 0), None);
    }
}

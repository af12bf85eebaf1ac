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
}

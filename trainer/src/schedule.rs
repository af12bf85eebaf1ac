//! Schedules as pure functions of the global step (DINO's `cosine_scheduler`,
//! lightly's `cosine_schedule`): learning rate, weight decay, EMA tau and
//! teacher temperature never depend on hidden state, so resuming is exact.

use std::f64::consts::PI;

/// Linear warmup from 0 to `base` over `warmup` steps, then cosine decay to
/// `final_value` at `total - 1`.
pub fn warmup_cosine(step: u64, total: u64, warmup: u64, base: f64, final_value: f64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).saturating_sub(1);
    if span == 0 {
        return final_value;
    }
    let t = ((step - warmup) as f64 / span as f64).min(1.0);
    final_value + 0.5 * (base - final_value) * (1.0 + (PI * t).cos())
}

/// lightly's `cosine_schedule`: `start` at step 0, `end` at `total - 1`
/// (BYOL's tau 0.996 -> 1, DINO's weight decay 0.04 -> 0.4).
pub fn cosine(step: u64, total: u64, start: f64, end: f64) -> f64 {
    if total <= 1 {
        return end;
    }
    let t = (step as f64 / (total - 1) as f64).min(1.0);
    end - (end - start) * ((PI * t).cos() + 1.0) / 2.0
}

/// DINO's teacher temperature at `epoch`: `np.linspace(start, end, epochs)[epoch]`
/// during the first `epochs` epochs (so the last warmup epoch already reaches
/// `end`), then `end` (DINO's `teacher_temp_schedule`, lightly's `DINOLoss`).
pub fn linspace_warmup(epoch: u64, epochs: u64, start: f64, end: f64) -> f64 {
    if epoch >= epochs {
        return end;
    }
    if epochs == 1 {
        return start;
    }
    start + (end - start) * epoch as f64 / (epochs - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_points() {
        assert!((warmup_cosine(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(10, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(99, 100, 10, 1.0, 0.01) - 0.01).abs() < 1e-12);
        // Halfway through the cosine part.
        assert!((warmup_cosine(10 + 89 / 2, 100, 10, 2.0, 0.0) - 1.0).abs() < 0.02);
        assert_eq!(warmup_cosine(5, 1, 0, 1.0, 0.25), 0.25);
        assert_eq!(cosine(0, 50, 0.996, 1.0), 0.996);
        assert!((cosine(49, 50, 0.996, 1.0) - 1.0).abs() < 1e-12);
        assert_eq!(cosine(0, 1, 0.996, 1.0), 1.0);
        assert_eq!(linspace_warmup(0, 30, 0.04, 0.07), 0.04);
        assert!((linspace_warmup(29, 30, 0.04, 0.07) - 0.07).abs() < 1e-12);
        assert_eq!(linspace_warmup(30, 30, 0.04, 0.07), 0.07);
        // np.linspace(0.04, 0.07, 4) = [0.04, 0.05, 0.06, 0.07].
        assert!((linspace_warmup(2, 4, 0.04, 0.07) - 0.06).abs() < 1e-12);
        assert_eq!(linspace_warmup(0, 1, 0.04, 0.07), 0.04);
        assert_eq!(linspace_warmup(5, 0, 0.04, 0.07), 0.07);
    }
}

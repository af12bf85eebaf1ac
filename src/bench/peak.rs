//! The machine's f32 peak, measured: every thread runs a register-resident
//! loop of independent fused multiply-adds (AVX2 and, where available,
//! AVX-512), and the best aggregate rate is the peak achieved GFLOP/s is
//! compared against. No memory traffic, so this is the compute ceiling, not
//! what any convolution can reach.

use std::time::Instant;

/// Measured peak of `threads` threads running at once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Peak {
    pub gflops: f64,
    pub per_thread_gflops: f64,
    pub threads: usize,
    /// The instruction set of the best loop (`avx512-fma`, `avx2-fma`, `scalar`).
    pub isa: String,
    pub method: String,
}

const ACC: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_99);
    let b = _mm256_set1_ps(1e-6);
    let mut acc = [_mm256_set1_ps(1.0); ACC];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let mut s = _mm256_setzero_ps();
    for r in acc {
        s = _mm256_add_ps(s, r);
    }
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_99);
    let b = _mm512_set1_ps(1e-6);
    let mut acc = [_mm512_set1_ps(1.0); ACC];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for r in acc {
        s = _mm512_add_ps(s, r);
    }
    _mm512_reduce_add_ps(s)
}

fn fma_scalar(iters: u64) -> f32 {
    let mut acc = [1f32; ACC];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = r.mul_add(0.999_99, 1e-6);
        }
    }
    acc.iter().sum()
}

/// (name, flops per inner iteration, kernel)
fn kernels() -> Vec<(&'static str, u64, fn(u64) -> f32)> {
    #[allow(unused_mut)]
    let mut k: Vec<(&'static str, u64, fn(u64) -> f32)> = vec![("scalar", 2 * ACC as u64, fma_scalar)];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            k.push(("avx2-fma", 16 * ACC as u64, |n| unsafe { fma_avx2(n) }));
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time.
            k.push(("avx512-fma", 32 * ACC as u64, |n| unsafe { fma_avx512(n) }));
        }
    }
    k
}

/// GFLOP/s of `threads` threads each running `kernel` for `iters` iterations at once.
fn run(threads: usize, flops_per_iter: u64, kernel: fn(u64) -> f32, iters: u64) -> f64 {
    let start = Instant::now();
    let sink: f32 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(move || kernel(std::hint::black_box(iters)))).collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    });
    std::hint::black_box(sink);
    (threads as u64 * iters * flops_per_iter) as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Measures the f32 FMA peak of `threads` threads: each kernel is sized to
/// ~0.2 s and run `reps` times; the best rate wins.
pub fn measure(threads: usize, reps: usize) -> Peak {
    let mut best = ("scalar", 0.0f64);
    for (name, fpi, kernel) in kernels() {
        // Calibrate to ~0.2 s per run.
        let probe = 1_000_000u64;
        let rate = run(1, fpi, kernel, probe);
        let iters = ((0.2 * rate * 1e9) / fpi as f64).max(1e5) as u64;
        for _ in 0..reps {
            let g = run(threads, fpi, kernel, iters);
            if g > best.1 {
                best = (name, g);
            }
        }
    }
    Peak {
        gflops: best.1,
        per_thread_gflops: best.1 / threads as f64,
        threads,
        isa: best.0.to_string(),
        method: format!("{threads} threads at once, each a loop of {ACC} independent {} FMAs on registers, best of {reps} runs of ~0.2 s", best.0),
    }
}

#[cfg(test)]
mod tests {
    /// The scalar loop counts its flops right: a tiny run gives a finite, positive rate.
    #[test]
    fn peak_is_positive_and_vector_beats_scalar() {
        let p = super::measure(1, 1);
        assert!(p.gflops.is_finite() && p.gflops > 0.1, "{p:?}");
        if p.isa != "scalar" {
            let s = super::run(1, 2 * super::ACC as u64, super::fma_scalar, 2_000_000);
            assert!(p.gflops > s, "vector {} <= scalar {s}", p.gflops);
        }
    }
}

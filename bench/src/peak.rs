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
    /// Best rate of `threads` threads running at once (lower than `gflops` when the cores are shared).
    pub concurrent_gflops: f64,
    pub threads: usize,
    /// The instruction set of the best loop (`avx512-fma`, `avx2-fma`, `scalar`).
    pub isa: String,
    pub method: String,
}

const ACC: usize = 12;

/// Twelve named accumulators (not an array) so that even the crate's
/// opt-level 1 keeps them in registers: an indexed array would live on the
/// stack and every FMA would wait on a load and a store.
macro_rules! fma12 {
    ($fma:ident, $a:ident, $b:ident, $init:expr, $iters:expr) => {{
        let (mut r0, mut r1, mut r2, mut r3, mut r4, mut r5) = ($init, $init, $init, $init, $init, $init);
        let (mut r6, mut r7, mut r8, mut r9, mut r10, mut r11) = ($init, $init, $init, $init, $init, $init);
        for _ in 0..$iters {
            r0 = $fma(r0, $a, $b);
            r1 = $fma(r1, $a, $b);
            r2 = $fma(r2, $a, $b);
            r3 = $fma(r3, $a, $b);
            r4 = $fma(r4, $a, $b);
            r5 = $fma(r5, $a, $b);
            r6 = $fma(r6, $a, $b);
            r7 = $fma(r7, $a, $b);
            r8 = $fma(r8, $a, $b);
            r9 = $fma(r9, $a, $b);
            r10 = $fma(r10, $a, $b);
            r11 = $fma(r11, $a, $b);
        }
        [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11]
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_99);
    let b = _mm256_set1_ps(1e-6);
    let acc = fma12!(_mm256_fmadd_ps, a, b, _mm256_set1_ps(1.0), iters);
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
    let acc = fma12!(_mm512_fmadd_ps, a, b, _mm512_set1_ps(1.0), iters);
    let mut s = _mm512_setzero_ps();
    for r in acc {
        s = _mm512_add_ps(s, r);
    }
    _mm512_reduce_add_ps(s)
}

fn fma_scalar(iters: u64) -> f32 {
    let fma = |r: f32, a: f32, b: f32| r.mul_add(a, b);
    let (a, b) = (0.999_99f32, 1e-6f32);
    let acc = fma12!(fma, a, b, 1.0f32, iters);
    acc.iter().sum()
}

/// (name, flops per inner iteration, kernel)
type Kernel = (&'static str, u64, fn(u64) -> f32);

fn kernels() -> Vec<Kernel> {
    #[allow(unused_mut)]
    let mut k: Vec<Kernel> = vec![("scalar", 2 * ACC as u64, fma_scalar)];
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

/// Measures the f32 FMA peak of `threads` threads. Each kernel runs in
/// `reps` bursts of ~20 ms, one thread alone and then `threads` at once; a
/// short burst is likely to run without being preempted on a shared machine,
/// so the best burst is the hardware's rate. The peak is `threads` x the best
/// single-thread burst; the best concurrent burst is reported beside it.
pub fn measure(threads: usize, reps: usize) -> Peak {
    let mut best = ("scalar", 0.0f64, 0.0f64);
    for (name, fpi, kernel) in kernels() {
        let probe = 200_000u64;
        let rate = run(1, fpi, kernel, probe).max(run(1, fpi, kernel, probe));
        let iters = ((0.02 * rate * 1e9) / fpi as f64).max(1e4) as u64;
        let single = (0..reps).map(|_| run(1, fpi, kernel, iters)).fold(0.0, f64::max);
        let together = (0..reps).map(|_| run(threads, fpi, kernel, iters)).fold(0.0, f64::max);
        if single > best.1 {
            best = (name, single, together);
        }
    }
    Peak {
        gflops: best.1 * threads as f64,
        per_thread_gflops: best.1,
        concurrent_gflops: best.2,
        threads,
        isa: best.0.to_string(),
        method: format!(
            "{threads} x the best of {reps} single-thread bursts of ~20 ms, each 12 independent {} FMA chains on registers (best {threads}-thread concurrent burst: {:.1} GFLOP/s)",
            best.0, best.2
        ),
    }
}

#[cfg(test)]
mod tests {
    /// The scalar loop counts its flops right: a tiny run gives a finite, positive rate.
    #[test]
    fn peak_is_positive_and_vector_beats_scalar() {
        let p = super::measure(1, 2);
        assert!(p.gflops.is_finite() && p.gflops > 0.1, "{p:?}");
        if p.isa != "scalar" {
            let s = super::run(1, 2 * super::ACC as u64, super::fma_scalar, 2_000_000);
            assert!(p.gflops > s, "vector {} <= scalar {s}", p.gflops);
        }
    }
}

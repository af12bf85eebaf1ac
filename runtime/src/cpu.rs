//! CPU time of this process, for timings on a shared machine: unlike wall
//! time it does not grow while other processes hold the cores.

/// Seconds of CPU this process has used (user + system, all threads), from
/// `/proc/self/stat` in clock ticks of 1/100 s; 0 off Linux.
pub fn process_cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn grows_with_work() {
        let t0 = super::process_cpu_seconds();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed().as_secs_f64() < 0.3 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let dt = super::process_cpu_seconds() - t0;
        if cfg!(target_os = "linux") {
            assert!(dt > 0.0 && dt < 5.0, "0.3 s of busy loop took {dt} CPU s");
        }
    }
}

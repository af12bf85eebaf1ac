//! CPU time of this process (user + system), for examples that time work on a shared machine.

/// Seconds of CPU this process has used, from `/proc/self/stat` (clock ticks of 1/100 s; 0 off Linux).
pub fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

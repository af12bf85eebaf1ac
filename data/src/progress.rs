//! Progress of long work (training, decoding, extraction, k-NN, bench) that
//! stays readable in a log: on a terminal an indicatif bar; when stdout or
//! stderr is not a terminal (`pretext train > log 2>&1`), one plain line on
//! stderr every [`interval`] seconds, plus one at the end:
//!
//! ```text
//! [train] 120/1000 (12%) 4.1 it/s, 0:29 elapsed, ETA 3:34 | loss 4.1203 lr 0.0300 263 img/s
//! ```
//!
//! The interval is 15 s, or `PRETEXT_PROGRESS_SECS` (tests use 1).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// The environment variable that overrides the plain lines' period, in seconds.
pub const INTERVAL_ENV: &str = "PRETEXT_PROGRESS_SECS";

/// Seconds between two plain progress lines: `PRETEXT_PROGRESS_SECS` when it
/// parses as a positive number, else 15.
pub fn interval() -> Duration {
    std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(15), Duration::from_secs_f64)
}

/// A progress indicator; clones share it (a decode callback can hold one).
#[derive(Clone)]
pub struct Progress(Arc<Kind>);

enum Kind {
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
    Hidden,
}

struct Lines {
    what: String,
    total: u64,
    pos: u64,
    msg: String,
    interval: Duration,
    /// Position and time of the first update, for the rate (a resumed run starts mid-way).
    base: Option<(u64, Instant)>,
    start: Instant,
    last: Instant,
    /// The position of the last line printed.
    shown: Option<u64>,
    done: bool,
}

impl Progress {
    /// A bar on a terminal, plain lines otherwise. `what` prefixes each line;
    /// `total` 0 means unknown (no percentage, no ETA).
    pub fn new(what: &str, total: u64) -> Self {
        if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} [{elapsed_precise}<{eta_precise}] {per_sec} {msg}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(what.to_string());
            Self(Arc::new(Kind::Bar(bar)))
        } else {
            Self::lines(what, total, interval())
        }
    }

    /// Plain lines whatever the terminal, every `interval`.
    pub fn lines(what: &str, total: u64, interval: Duration) -> Self {
        let now = Instant::now();
        Self(Arc::new(Kind::Lines(Mutex::new(Lines { what: what.to_string(), total, pos: 0, msg: String::new(), interval, base: None, start: now, last: now, shown: None, done: false }))))
    }

    /// Shows nothing (`--quiet`).
    pub fn hidden() -> Self {
        Self(Arc::new(Kind::Hidden))
    }

    fn update(&self, f: impl FnOnce(&mut Lines), bar: impl FnOnce(&ProgressBar)) {
        match &*self.0 {
            Kind::Bar(b) => bar(b),
            Kind::Lines(l) => {
                let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
                f(&mut l);
                if l.base.is_none() {
                    l.base = Some((l.pos, Instant::now()));
                }
                if l.last.elapsed() >= l.interval && !l.done {
                    l.last = Instant::now();
                    l.shown = Some(l.pos);
                    eprintln!("{}", l.line());
                }
            }
            Kind::Hidden => {}
        }
    }

    pub fn set_length(&self, total: u64) {
        self.update(|l| l.total = total, |b| b.set_length(total));
    }

    pub fn set_position(&self, pos: u64) {
        self.update(|l| l.pos = pos, |b| b.set_position(pos));
    }

    pub fn inc(&self, n: u64) {
        self.update(|l| l.pos += n, |b| b.inc(n));
    }

    /// The text after the counts (loss, stage...); shown with the next line.
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &*self.0 {
            Kind::Bar(b) => b.set_message(msg),
            Kind::Lines(l) => l.lock().unwrap_or_else(|e| e.into_inner()).msg = msg,
            Kind::Hidden => {}
        }
    }

    /// A decode callback for [`crate::OpenOptions::progress`]: the stage becomes the message.
    pub fn callback(&self) -> crate::ProgressFn {
        let p = self.clone();
        Arc::new(move |stage: &str, done: u64, total: u64| {
            p.set_length(total);
            p.set_message(stage);
            p.set_position(done);
        })
    }

    /// Ends the progress: the bar stays drawn; plain mode prints a last line.
    pub fn finish(&self) {
        self.end(ProgressBar::finish, true);
    }

    /// Ends the progress: the bar is erased; plain mode prints a last line.
    pub fn finish_and_clear(&self) {
        self.end(ProgressBar::finish_and_clear, true);
    }

    /// Stops at an error: the bar stays where it was; plain mode prints nothing more.
    pub fn abandon(&self) {
        self.end(ProgressBar::abandon, false);
    }

    fn end(&self, bar: fn(&ProgressBar), last_line: bool) {
        match &*self.0 {
            Kind::Bar(b) => bar(b),
            Kind::Lines(l) => {
                let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
                if !l.done && last_line && l.start.elapsed() >= l.interval && l.shown != Some(l.pos) {
                    eprintln!("{} (done)", l.line());
                }
                l.done = true;
            }
            Kind::Hidden => {}
        }
    }
}

impl Lines {
    fn line(&self) -> String {
        let elapsed = self.start.elapsed().as_secs_f64();
        let rate = self.base.map(|(p0, t0)| self.pos.saturating_sub(p0) as f64 / t0.elapsed().as_secs_f64().max(1e-9)).unwrap_or(0.0);
        let mut s = format!("[{}] {}", self.what, self.pos);
        if self.total > 0 {
            s += &format!("/{} ({:.0}%)", self.total, 100.0 * self.pos as f64 / self.total as f64);
        }
        if rate > 0.0 {
            s += &format!(" {}/s,", fmt_rate(rate));
        }
        s += &format!(" {} elapsed", hms(elapsed));
        if self.total > self.pos && rate > 0.0 {
            s += &format!(", ETA {}", hms((self.total - self.pos) as f64 / rate));
        }
        if !self.msg.is_empty() {
            s += &format!(" | {}", self.msg);
        }
        s
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 1.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.3}")
    }
}

/// `m:ss`, or `h:mm:ss` from an hour on.
fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_carries_counts_rate_eta_and_message() {
        let p = Progress::lines("train", 100, Duration::from_secs(3600));
        p.set_position(10);
        p.set_message("loss 1.2345");
        let Kind::Lines(l) = &*p.0 else { panic!("plain mode") };
        let mut l = l.lock().unwrap();
        l.base = Some((0, Instant::now() - Duration::from_secs(10)));
        l.pos = 20;
        // 20 steps in 10 s: 2/s, 80 left: 40 s.
        let line = l.line();
        assert!(line.starts_with("[train] 20/100 (20%) 2.0/s,"), "{line}");
        assert!(line.contains("ETA 0:40") && line.ends_with("| loss 1.2345"), "{line}");
    }

    #[test]
    fn durations_and_interval() {
        assert_eq!((hms(59.4), hms(61.0), hms(3725.0)), ("0:59".to_string(), "1:01".to_string(), "1:02:05".to_string()));
        // One test touches the variable, so no other test races with it.
        std::env::set_var(INTERVAL_ENV, "0.5");
        assert_eq!(interval(), Duration::from_millis(500));
        std::env::set_var(INTERVAL_ENV, "nan");
        assert_eq!(interval(), Duration::from_secs(15));
        std::env::remove_var(INTERVAL_ENV);
    }
}

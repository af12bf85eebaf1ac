//! The Python peers (scripts/bench_peers.py) as a child process that serves
//! timing requests, one JSON line each way, so `pretext bench` can time them
//! in the same rounds as its own systems (A B C A B C ...).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::stats::Timing;

pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// `script (spec)`, for errors.
    what: String,
    out: PathBuf,
}

impl Peer {
    /// Starts `python script spec out` with `spec` written to `spec_path`, and
    /// waits until its peers are set up (models built, exported, sessions open).
    pub fn start(python: &Path, script: &Path, spec_path: &Path, spec: &Value, out: &Path, threads: usize) -> Result<Self> {
        std::fs::write(spec_path, serde_json::to_vec_pretty(spec)?).with_context(|| format!("writing {}", spec_path.display()))?;
        let mut child = Command::new(python)
            .arg(script)
            .arg(spec_path)
            .arg(out)
            .env("OMP_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else { bail!("{}: no pipes to the child", script.display()) };
        let mut peer = Self { child, stdin, stdout: BufReader::new(stdout), what: format!("{} ({})", script.display(), spec_path.display()), out: out.to_path_buf() };
        let ready = peer.reply("setup")?;
        if ready["ready"] != true {
            bail!("{}: expected {{\"ready\": true}} after setup, got {ready}", peer.what);
        }
        Ok(peer)
    }

    fn reply(&mut self, asked: &str) -> Result<Value> {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).with_context(|| format!("reading the reply of {} to {asked}", self.what))?;
        if n == 0 {
            let status = self.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            bail!("{} exited ({status}) before answering {asked} (its error is above); rerun with --no-peers to measure pretext alone", self.what);
        }
        serde_json::from_str(&line).with_context(|| format!("{}: reply to {asked} is not JSON: {line:?}", self.what))
    }

    /// Sends one request and returns the reply.
    pub fn call(&mut self, req: &Value) -> Result<Value> {
        writeln!(self.stdin, "{req}").and_then(|_| self.stdin.flush()).with_context(|| format!("sending {req} to {}", self.what))?;
        self.reply(&req.to_string())
    }

    /// One timed block of `system` on `case` (a model at `batch`, or `knn`): per-iteration seconds.
    pub fn time(&mut self, system: &str, case: &str, batch: usize, timing: &Timing) -> Result<Vec<f64>> {
        let r = self.call(&json!({"cmd": "time", "system": system, "case": case, "batch": batch, "timing": timing}))?;
        serde_json::from_value(r["times_s"].clone()).with_context(|| format!("{}: no times_s for {system} {case} b{batch}: {r}", self.what))
    }

    /// The next `steps` training steps of `system`: (per-step seconds if `timed`, losses).
    pub fn train(&mut self, system: &str, steps: usize, timed: bool) -> Result<(Vec<f64>, Vec<f64>)> {
        let r = self.call(&json!({"cmd": "train", "system": system, "case": "training", "steps": steps, "timed": timed}))?;
        let parse = |k: &str| serde_json::from_value::<Vec<f64>>(r[k].clone()).with_context(|| format!("{}: no {k} for {system}: {r}", self.what));
        Ok((parse("times_s")?, parse("losses")?))
    }

    /// Ends the session: the peer writes its outputs and the result JSON, which is returned.
    pub fn finish(mut self) -> Result<Value> {
        let r = self.call(&json!({"cmd": "finish"}))?;
        if r["done"] != true {
            bail!("{}: expected {{\"done\": true}}, got {r}", self.what);
        }
        let status = self.child.wait().with_context(|| format!("waiting for {}", self.what))?;
        if !status.success() {
            bail!("{} failed ({status})", self.what);
        }
        serde_json::from_slice(&std::fs::read(&self.out).with_context(|| format!("reading {}", self.out.display()))?).with_context(|| format!("parsing {}", self.out.display()))
    }
}

impl Drop for Peer {
    /// A bench that stops on an error does not leave the peer waiting on its stdin.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

//! The Python peers (scripts/bench_peers.py) as a child process that serves
//! timing requests, one JSON line each way, so `pretext bench` can time them
//! in the same rounds as its own systems (A B C A B C ...).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::stats::Timing;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for bench_peers.py speaking the same protocol.
    const FAKE: &str = r#"
import json, sys
spec = json.load(open(sys.argv[1]))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["cmd"] == "finish":
        json.dump({"versions": spec["tag"]}, open(sys.argv[2], "w"))
        print(json.dumps({"done": True}), flush=True)
        break
    if req["cmd"] == "train":
        print(json.dumps({"times_s": [0.5] * req["steps"], "losses": [1.0] * req["steps"]}), flush=True)
    else:
        print(json.dumps({"times_s": [req["batch"] / 1000, req["timing"]["budget_s"]]}), flush=True)
"#;

    #[test]
    fn requests_and_replies_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake.py");
        std::fs::write(&script, FAKE).unwrap();
        let mut p = Peer::start(Path::new("python3"), &script, &dir.path().join("spec.json"), &json!({"tag": "x"}), &dir.path().join("out.json"), 1).unwrap();
        let t = Timing { warmup: 0, min_iters: 1, max_iters: 1, budget_s: 0.25 };
        assert_eq!(p.time("pytorch_eager", "resnet18-cifar", 8, &t).unwrap(), vec![0.008, 0.25]);
        assert_eq!(p.train("pytorch", 2, true).unwrap(), (vec![0.5, 0.5], vec![1.0, 1.0]));
        assert_eq!(p.finish().unwrap()["versions"], "x");
    }

    #[test]
    fn a_peer_that_dies_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("dies.py");
        std::fs::write(&script, "import sys; sys.exit(3)\n").unwrap();
        let e = Peer::start(Path::new("python3"), &script, &dir.path().join("spec.json"), &json!({}), &dir.path().join("out.json"), 1).err().unwrap();
        let msg = format!("{e:#}");
        assert!(msg.contains("dies.py") && msg.contains("exited") && msg.contains("setup"), "{msg}");
    }
}

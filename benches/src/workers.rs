//! `--procs N`: the parent spawns N copies of itself, one shard each, and merges their results.
//!
//! Needed because a process here may hold at most 20,000 open files. The protocol on the
//! children's stdio is three lines: the child prints `READY` once its connections are open, the
//! parent answers `GO` on stdin when all are ready (so every shard publishes over the same
//! window), and the child prints `RESULT <json>` at the end. Children's diagnostics go to stderr.

use crate::cli::Args;
use crate::run::{run_shard, Phases};
use crate::stats::WorkerResult;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Next line starting with `tag`, skipping anything else; error at end of output.
    fn expect(&mut self, tag: &str) -> io::Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                return Err(io::Error::other(format!("worker exited before {tag}")));
            }
            if let Some(rest) = line.trim_end().strip_prefix(tag) {
                return Ok(rest.trim().to_string());
            }
        }
    }
}

/// Runs the parent side: spawns, synchronises the start, merges.
pub fn run_parent(args: &Args, run: &str, hooks: &mut dyn Phases) -> io::Result<WorkerResult> {
    let exe = std::env::current_exe()?;
    let passthrough: Vec<String> = std::env::args().skip(1).collect();
    let n = args.procs;
    let mut workers = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut child = Command::new(&exe)
            .args(&passthrough)
            .args(["--worker", &format!("{i}/{n}"), "--run", run])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("worker without stdio pipes"));
        };
        workers.push(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        });
    }
    let outcome = drive(args, &mut workers, hooks);
    for w in &mut workers {
        if outcome.is_err() {
            let _ = w.child.kill();
        }
        let _ = w.child.wait();
    }
    outcome
}

fn drive(args: &Args, workers: &mut [Worker], hooks: &mut dyn Phases) -> io::Result<WorkerResult> {
    for w in workers.iter_mut() {
        w.expect("READY")?;
    }
    hooks.ready()?;
    for w in workers.iter_mut() {
        writeln!(w.stdin, "GO")?;
        w.stdin.flush()?;
    }
    hooks.started();
    std::thread::sleep(args.duration);
    hooks.stopped();
    let mut total = WorkerResult::default();
    for w in workers.iter_mut() {
        let json = w.expect("RESULT")?;
        let r: WorkerResult = serde_json::from_str(&json).map_err(io::Error::other)?;
        total.merge(&r);
    }
    Ok(total)
}

/// The child's hooks: report readiness, wait for the start.
struct ChildHooks;

impl Phases for ChildHooks {
    fn ready(&mut self) -> io::Result<()> {
        let mut out = io::stdout().lock();
        writeln!(out, "READY")?;
        out.flush()?;
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        if line.trim() == "GO" {
            Ok(())
        } else {
            Err(io::Error::other("parent went away before GO"))
        }
    }
    fn started(&mut self) {}
    fn stopped(&mut self) {}
}

/// Runs the child side for shard `i` of `n`.
pub fn run_child(args: &Args, run: &str, i: u32, n: u32) -> io::Result<()> {
    let r = run_shard(args, run, i, n, &mut ChildHooks)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "RESULT {}",
        serde_json::to_string(&r).map_err(io::Error::other)?
    )?;
    out.flush()
}

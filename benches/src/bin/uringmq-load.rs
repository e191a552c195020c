//! `uringmq-load`: see `uringmq-load --help` and BENCHMARKS.md.

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use uringmq_bench::cli::{Args, Scenario};
use uringmq_bench::report::{BrokerProbe, Report};
use uringmq_bench::{clock, run, workers};

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.host.is_loopback() {
        eprintln!(
            "uringmq-load: --host {} is not a loopback address; benchmarks stay on this machine",
            args.host
        );
        return ExitCode::from(2);
    }
    let run_id = args.run.clone().unwrap_or_else(|| {
        format!(
            "{:x}",
            (clock::mono_ns() / 1000) ^ u64::from(std::process::id())
        )
    });
    if args.null_broker {
        return match uringmq_bench::null_broker::serve(args.port, args.duration) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("uringmq-load: null broker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some((i, n)) = args.worker {
        return match workers::run_child(&args, &run_id, i, n) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("uringmq-load worker {i}/{n}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let settle = if args.scenario == Scenario::Idle {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    let mut probe = BrokerProbe::new(&args.broker_pid, settle);
    let result = if args.procs > 1 {
        workers::run_parent(&args, &run_id, &mut probe)
    } else {
        run::run_shard(&args, &run_id, 0, 1, &mut probe)
    };
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("uringmq-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = Report::new(&args, &result, &probe);
    if !args.quiet {
        print!("{}", report.table());
    }
    if let Some(path) = &args.json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|j| std::fs::write(path, j));
        if let Err(e) = written {
            eprintln!("uringmq-load: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if args.strict && !report.problems.is_empty() {
        eprintln!("uringmq-load: --strict: {}", report.problems.join("; "));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

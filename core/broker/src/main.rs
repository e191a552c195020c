//! The `uringmq` binary: config file plus flags for the common settings; SIGINT/SIGTERM stop
//! it cleanly (connections closed, no wills sent); SIGHUP reloads certificates, the password
//! file and the ACL file. `uringmq passwd` manages password files.

use clap::{Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use uringmq::{cli, init_logging_background, Broker, Config, Driver};

#[global_allocator]
static GLOBAL: uringmq::Allocator = uringmq::Allocator;

/// A thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Parser, Debug)]
#[command(name = "uringmq", version, about)]
struct Args {
    /// TOML config file (every key is documented in uringmq.example.toml).
    #[arg(short, long, env = "URINGMQ_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the default listener (overrides `bind`); `localhost` is 127.0.0.1.
    #[arg(long, value_parser = uringmq::parse_bind)]
    bind: Option<IpAddr>,
    /// Port of the default listener; 0 picks a free one (overrides `port`).
    #[arg(short, long)]
    port: Option<u16>,
    /// Number of cores; 0 = one per CPU (overrides `cores`).
    #[arg(long)]
    cores: Option<usize>,
    /// tracing filter, e.g. `info` or `uringmq=debug` (overrides `log_level`; RUST_LOG style).
    #[arg(long)]
    log_level: Option<String>,
    /// io driver: auto, io_uring or epoll (overrides `driver`).
    #[arg(long, value_parser = parse_driver)]
    driver: Option<Driver>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or update a Mosquitto-compatible password file (like mosquitto_passwd).
    Passwd(cli::Passwd),
    /// Inspect a uringmq cluster: `uringmq cluster status`.
    #[command(subcommand)]
    Cluster(uringmq::ClusterCmd),
}

fn parse_driver(s: &str) -> Result<Driver, String> {
    match s {
        "auto" => Ok(Driver::Auto),
        "io_uring" | "iouring" | "uring" => Ok(Driver::IoUring),
        "epoll" | "legacy" => Ok(Driver::Epoll),
        _ => Err(format!("unknown driver {s:?} (auto, io_uring, epoll)")),
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started after), so they
/// are received by `sigwait` only. Call it before any thread starts, the logging thread included:
/// the kernel hands a process's signal to any thread that does not block it, and one that comes
/// while `main` is not in `sigwait` (the broker starts, its port already taking connections)
/// would kill the process there, a crash where a clean stop was asked for. Blocked, it waits
/// for `serve_until_stopped`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask manipulation on a zeroed, then initialised, sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    match args.command.take() {
        Some(Command::Passwd(p)) => return std::process::ExitCode::from(p.run()),
        Some(Command::Cluster(c)) => return std::process::ExitCode::from(c.run()),
        None => {}
    }
    let config = match config_of(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("uringmq: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", config.to_toml_string());
        return std::process::ExitCode::SUCCESS;
    }
    let set = block_signals();
    // Held to the end of `main`: dropping it writes the lines still queued.
    let _log = init_logging_background(
        &std::env::var("RUST_LOG").unwrap_or_else(|_| config.log_level.clone()),
        config.log_format,
    );
    let mut broker = match Broker::builder(config).start() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("uringmq: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    for (name, addr) in broker.listener_addrs() {
        tracing::info!(listener = %name, %addr, "listening");
    }
    if let Some(addr) = broker.metrics_addr() {
        tracing::info!(%addr, "metrics endpoint: /metrics, /healthz, /readyz");
    }
    let sig = serve_until_stopped(&broker, &set);
    // The counters, for the operator (and the process tests, which see nothing else).
    tracing::info!(
        signal = sig,
        stats = ?broker.stats(),
        persistence = ?broker.persistence_stats(),
        "stopping"
    );
    broker.stop();
    std::process::ExitCode::SUCCESS
}

/// The config file (or the defaults) with the command line's overrides.
fn config_of(args: &Args) -> Result<Config, uringmq::ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(b) = args.bind {
        config.bind = b;
    }
    if let Some(p) = args.port {
        config.port = p;
    }
    if let Some(c) = args.cores {
        config.cores = c;
    }
    if let Some(l) = &args.log_level {
        config.log_level = l.clone();
    }
    if let Some(d) = args.driver {
        config.driver = d;
    }
    Ok(config)
}

/// Reloads on SIGHUP until SIGINT or SIGTERM, which it returns.
fn serve_until_stopped(broker: &Broker, set: &libc::sigset_t) -> libc::c_int {
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: waiting on the signals blocked above.
        unsafe { libc::sigwait(set, &mut sig) };
        if sig != libc::SIGHUP {
            return sig;
        }
        tracing::info!("SIGHUP: reloading certificates, password file and ACL file");
        broker.reload();
    }
}

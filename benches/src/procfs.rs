//! Resident memory and CPU time of a process, from `/proc/<pid>/status` and `/proc/<pid>/stat`,
//! and the kernel's own memory, from `/proc/meminfo` and `/proc/net/sockstat`.
//!
//! Used for the broker (`--broker-pid`: one process or the nodes of a cluster), for the load
//! generator itself, whose own CPU use shows whether it, rather than the broker, was the
//! bottleneck, and for what the connections cost the kernel (socket structures, buffers).

use std::fs;
use std::io;

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcSample {
    /// VmRSS in KiB.
    pub rss_kb: u64,
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    /// `CLOCK_MONOTONIC` nanoseconds at the reading.
    pub at_ns: u64,
}

/// Reads `/proc/<pid>` (or `/proc/self` for `None`).
pub fn sample(pid: Option<u32>) -> io::Result<ProcSample> {
    let dir = pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
    let status = fs::read_to_string(format!("{dir}/status"))?;
    let stat = fs::read_to_string(format!("{dir}/stat"))?;
    Ok(ProcSample {
        rss_kb: parse_rss_kb(&status).unwrap_or(0),
        cpu_ticks: parse_cpu_ticks(&stat)
            .ok_or_else(|| io::Error::other("unreadable /proc stat line"))?,
        at_ns: crate::clock::mono_ns(),
    })
}

/// The processes `pids` as one: RSS and CPU time added up. `None` without pids or when one of
/// them cannot be read (it is gone: a sum without it would mislead).
pub fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    let mut total = ProcSample::default();
    for &p in pids {
        let s = sample(Some(p)).ok()?;
        total.rss_kb += s.rss_kb;
        total.cpu_ticks += s.cpu_ticks;
        total.at_ns = s.at_ns;
    }
    (!pids.is_empty()).then_some(total)
}

/// Kernel-wide memory: what sockets cost outside any process (both ends of each loopback
/// connection, and whatever else the machine does meanwhile).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelSample {
    /// `Slab` of /proc/meminfo, KiB: socket structures, their inodes, files, epoll items.
    pub slab_kb: u64,
    /// Pages of TCP socket buffers (`mem` on the TCP line of /proc/net/sockstat).
    pub tcp_mem_pages: u64,
    /// TCP sockets allocated (`alloc` on the same line).
    pub tcp_alloc: u64,
    /// `MemTotal - MemAvailable`, KiB: the whole machine's use.
    pub used_kb: u64,
}

/// Reads the kernel's memory figures.
pub fn kernel_sample() -> io::Result<KernelSample> {
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    let sockstat = fs::read_to_string("/proc/net/sockstat")?;
    let kb = |key| field(&meminfo, key, key).unwrap_or(0);
    Ok(KernelSample {
        slab_kb: kb("Slab:"),
        tcp_mem_pages: field(&sockstat, "TCP:", "mem").unwrap_or(0),
        tcp_alloc: field(&sockstat, "TCP:", "alloc").unwrap_or(0),
        used_kb: kb("MemTotal:").saturating_sub(kb("MemAvailable:")),
    })
}

/// The number after the word `name` on the line starting with `line`.
fn field(text: &str, line: &str, name: &str) -> Option<u64> {
    let l = text.lines().find(|l| l.starts_with(line))?;
    let mut words = l.split_whitespace();
    words.find(|w| *w == name)?;
    words.next()?.parse().ok()
}

/// `VmRSS:   1234 kB` -> 1234.
pub fn parse_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime (field 14) + stime (field 15). The command name (field 2) may contain spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(before: &ProcSample, after: &ProcSample) -> f64 {
    let secs = after.at_ns.saturating_sub(before.at_ns) as f64 / 1e9;
    if secs <= 0.0 {
        return 0.0;
    }
    let cpu = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / ticks_per_sec() as f64;
    100.0 * cpu / secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_name() {
        let stat =
            "42 (my (odd) proc) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 10 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_rss() {
        assert_eq!(
            parse_rss_kb("Name:\tx\nVmRSS:\t   5120 kB\nVmSwap: 0 kB\n"),
            Some(5120)
        );
        assert_eq!(parse_rss_kb("Name:\tkthread\n"), None);
    }

    #[test]
    fn parses_kernel_lines() {
        let sockstat = "sockets: used 19\nTCP: inuse 1 orphan 0 tw 0 alloc 7 mem 3\n";
        assert_eq!(field(sockstat, "TCP:", "mem"), Some(3));
        assert_eq!(field(sockstat, "TCP:", "alloc"), Some(7));
        assert_eq!(field("Slab:   290112 kB\n", "Slab:", "Slab:"), Some(290112));
        assert!(kernel_sample().unwrap().slab_kb > 0);
    }

    #[test]
    fn sums_processes() {
        let me = std::process::id();
        let one = sample_all(&[me]).unwrap();
        let two = sample_all(&[me, me]).unwrap();
        assert!(two.rss_kb > one.rss_kb);
        assert_eq!(sample_all(&[]), None);
    }

    #[test]
    fn reads_itself() {
        let s = sample(None).unwrap();
        assert!(s.rss_kb > 0);
    }

    #[test]
    fn percent_of_one_core() {
        let a = ProcSample {
            rss_kb: 0,
            cpu_ticks: 0,
            at_ns: 0,
        };
        let b = ProcSample {
            rss_kb: 0,
            cpu_ticks: ticks_per_sec(),
            at_ns: 2_000_000_000,
        };
        assert!((cpu_percent(&a, &b) - 50.0).abs() < 1e-9);
    }
}

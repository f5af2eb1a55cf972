//! CPU time of a process from /proc: the sum over its threads of schedstat's time on CPU, and utime +
//! stime as a cross-check.

use std::fs;
use std::process::Command;
use std::sync::OnceLock;

/// Clock ticks per second of /proc/<pid>/stat (`getconf CLK_TCK`, 100 if that fails).
fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// CPU time a process has used so far, by two measures.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSample {
    /// Sum over its threads of /proc/<pid>/task/<tid>/schedstat's first field (ns on CPU). None if any
    /// thread's file could not be read (kernel without schedstat).
    pub sched_ns: Option<u64>,
    /// utime + stime of /proc/<pid>/stat (whole process, clock ticks).
    pub ticks: Option<u64>,
}

impl CpuSample {
    pub fn of(pid: u32) -> CpuSample {
        CpuSample {
            sched_ns: sched_ns(pid),
            ticks: stat_ticks(pid),
        }
    }

    /// Component-wise sum (the `ext_authz` pair).
    pub fn plus(self, o: CpuSample) -> CpuSample {
        CpuSample {
            sched_ns: self.sched_ns.zip(o.sched_ns).map(|(a, b)| a + b),
            ticks: self.ticks.zip(o.ticks).map(|(a, b)| a + b),
        }
    }

    /// ns of CPU between `before` and `self`: schedstat if both have it, else the tick counts
    /// (10 ms resolution at CLK_TCK 100). The second value names the source.
    pub fn since(self, before: CpuSample) -> (f64, &'static str) {
        if let (Some(a), Some(b)) = (self.sched_ns, before.sched_ns) {
            if a >= b {
                return ((a - b) as f64, "schedstat");
            }
        }
        match (self.ticks, before.ticks) {
            (Some(a), Some(b)) => (a.saturating_sub(b) as f64 * 1e9 / clk_tck() as f64, "stat"),
            _ => (f64::NAN, "none"),
        }
    }

    /// utime+stime delta in ns (the cross-check of `since`).
    pub fn ticks_ns_since(self, before: CpuSample) -> Option<f64> {
        Some(self.ticks?.saturating_sub(before.ticks?) as f64 * 1e9 / clk_tck() as f64)
    }
}

fn sched_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    let mut n = 0;
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let text = fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        n += 1;
    }
    (n > 0).then_some(total)
}

fn stat_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

//! The figures every daemon of the suite exports besides its own: `PREFIX_build_info`, and
//! the process's CPU time, resident memory, open descriptors and start time (`process_*`, read
//! from `/proc/self` at each scrape, so nothing runs between scrapes).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// A new registry for one process, holding `PREFIX_build_info{version,revision}` (from the
/// program's `LOGSUITE_VERSION`, "0.1.0 (rev 1a2b3c4d5e6f)") and the process collector.
pub fn registry(prefix: &str, version: &str) -> Registry {
    let (v, rev) = match version.split_once(" (rev ") {
        Some((v, rev)) => (v.to_string(), rev.trim_end_matches(')').to_string()),
        None => (version.to_string(), "unknown".to_string()),
    };
    let mut r = Registry::default();
    r.register(
        format!("{prefix}_build"),
        "Always 1; the labels name the program's version and the git revision it was built from.",
        Info::new(vec![
            ("version".to_string(), v),
            ("revision".to_string(), rev),
        ]),
    );
    r.register_collector(Box::new(ProcessCollector));
    r
}

/// The registry's OpenMetrics text (ends with `# EOF`).
pub fn encode(registry: &Registry) -> String {
    let mut s = String::with_capacity(8192);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut s, registry);
    s
}

/// `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds` of this process, as Prometheus' own
/// client libraries name them.
#[derive(Debug)]
pub struct ProcessCollector;

struct ProcStat {
    cpu_seconds: f64,
    rss_bytes: i64,
    start_time_seconds: f64,
}

fn proc_stat() -> Option<ProcStat> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: the fields after it follow its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field n of proc(5) is f[n - 3] here.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let start_ticks: f64 = f.get(19)?.parse().ok()?;
    let rss_pages: i64 = f.get(21)?.parse().ok()?;
    // SAFETY: sysconf only reads system constants.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as i64,
        )
    };
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcStat {
        cpu_seconds: (utime + stime) / ticks,
        rss_bytes: rss_pages * page,
        start_time_seconds: btime + start_ticks / ticks,
    })
}

fn max_fds() -> Option<i64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(p) = proc_stat() {
            let c = ConstCounter::new(p.cpu_seconds);
            c.encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time this process spent.",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?)?;
            let g = ConstGauge::new(p.rss_bytes);
            g.encode(encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory of this process.",
                Some(&Unit::Bytes),
                g.metric_type(),
            )?)?;
            let g = ConstGauge::new(p.start_time_seconds);
            g.encode(encoder.encode_descriptor(
                "process_start_time",
                "When this process started, Unix time.",
                Some(&Unit::Seconds),
                g.metric_type(),
            )?)?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle read here is one of them; leave it out.
            let g = ConstGauge::new(dir.count() as i64 - 1);
            g.encode(encoder.encode_descriptor(
                "process_open_fds",
                "File descriptors this process holds open.",
                None,
                g.metric_type(),
            )?)?;
        }
        if let Some(n) = max_fds() {
            let g = ConstGauge::new(n);
            g.encode(encoder.encode_descriptor(
                "process_max_fds",
                "This process's limit on open file descriptors (RLIMIT_NOFILE).",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_figures_are_exported() {
        let text = encode(&registry("log_proxy", "0.1.0 (rev 1a2b3c4d5e6f)"));
        assert!(
            text.contains("log_proxy_build_info{version=\"0.1.0\",revision=\"1a2b3c4d5e6f\"} 1"),
            "{text}"
        );
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "# UNIT process_resident_memory_bytes bytes",
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

//! Parser micro-benchmark: `log_proxy::syslog::parse` against `syslog_loose` on the lines
//! Docker's syslog driver sends (`rfc5424micro`, `rfc3164`; and its default format, ours only).
//!
//! `syslog_loose` takes `&str`, so its column includes the UTF-8 check the proxy would need
//! on received bytes (and a line with non-UTF-8 bytes could not go through it at all); its
//! RFC 3164 path asks for the current year, so it is measured with a fixed year (`+year`)
//! and with the default `parse_message` (which reads the local clock and time zone).
//!
//! It also times the stream framer (`log_proxy::intake::Framer`): ordinary lines read 64 KiB
//! at a time, and one long line arriving in 64 KiB reads (the framer looks for the newline
//! from the start of what it holds on every read).
//!
//! ```text
//! cargo run --release -p log-proxy --example parsebench -- [LINES_PER_RUN] [RUNS]
//! ```

use std::hint::black_box;
use std::time::Instant;

use syslog_loose::Variant;

fn lines(format: &str) -> Vec<Vec<u8>> {
    (0..1000u32)
        .map(|i| {
            let id = format!(
                "{:012x}",
                (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
            );
            let payload =
                format!("GET /api/v1/items?page={i} 200 0.004s ua=curl/7.88 req=5f2c9a1e");
            match format {
                "rfc5424micro" => {
                    format!("<30>1 2026-11-22T13:32:28.396128Z vm {id} 3076 {id} - {payload}\n")
                }
                "docker-default" => format!("<30>Nov 22 13:32:28 {id}[3076]: {payload}\n"),
                _ => format!("<30>Nov 22 13:32:28 vm {id}[3076]: {payload}\n"),
            }
            .into_bytes()
        })
        .collect()
}

/// This thread's CPU time in ns: what a parse costs, whatever else runs on the machine
/// (a shared machine preempts; wall time would count the waits).
fn thread_cpu_ns() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
}

/// Median CPU ns/line of `runs` runs of `n` parses each.
fn measure(input: &[Vec<u8>], n: usize, runs: usize, f: impl Fn(&[u8]) -> usize) -> f64 {
    let mut results: Vec<f64> = (0..runs)
        .map(|_| {
            let start = thread_cpu_ns();
            let mut acc = 0usize;
            for i in 0..n {
                acc = acc.wrapping_add(f(black_box(&input[i % input.len()])));
            }
            black_box(acc);
            (thread_cpu_ns() - start) / n as f64
        })
        .collect();
    results.sort_by(f64::total_cmp);
    results[results.len() / 2]
}

fn ours(b: &[u8]) -> usize {
    match log_proxy::syslog::parse(b) {
        Some(m) => m.tag.len() + m.msg.len() + m.severity as usize,
        None => 0,
    }
}

fn loose_fixed_year(b: &[u8]) -> usize {
    let Ok(s) = std::str::from_utf8(b) else {
        return 0;
    };
    let m = syslog_loose::parse_message_with_year(s, |_| 2026, Variant::Either);
    m.appname.map_or(0, str::len) + m.msg.len() + m.severity.map_or(0, |s| s as usize)
}

fn loose_default(b: &[u8]) -> usize {
    let Ok(s) = std::str::from_utf8(b) else {
        return 0;
    };
    let m = syslog_loose::parse_message(s, Variant::Either);
    m.appname.map_or(0, str::len) + m.msg.len() + m.severity.map_or(0, |s| s as usize)
}

/// Median milliseconds to frame `data` fed in `chunk`-byte reads.
fn frame_ms(data: &[u8], chunk: usize, runs: usize) -> (f64, usize) {
    let mut lines = 0;
    let mut results: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let mut framer = log_proxy::intake::Framer::default();
            let mut out = log_proxy::intake::Messages::default();
            for c in data.chunks(chunk) {
                framer.feed(c, &mut out);
                if out.ends.len() > 1024 {
                    lines += out.ends.len();
                    out = Default::default();
                }
            }
            framer.finish(&mut out);
            lines += out.ends.len();
            black_box(&out);
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    results.sort_by(f64::total_cmp);
    (results[results.len() / 2], lines / runs)
}

fn framer_bench(runs: usize) {
    let line = lines("rfc5424micro").concat();
    let stream: Vec<u8> = line.iter().copied().cycle().take(64 << 20).collect();
    let (ms, n) = frame_ms(&stream, 64 * 1024, runs);
    println!(
        "framer, 64 MiB of ~124-byte lines in 64 KiB reads: {:.1} ns/line ({n} lines)",
        ms * 1e6 / n as f64
    );
    for mib in [1usize, 4] {
        let mut long = vec![b'x'; (mib << 20) - 1];
        long.push(b'\n');
        let (ms, _) = frame_ms(&long, 64 * 1024, runs);
        let (one, _) = frame_ms(&long, long.len(), runs);
        println!(
            "framer, one {mib} MiB line in 64 KiB reads: {ms:.2} ms (in one read: {one:.2} ms)"
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(2_000_000, |a| a.parse().expect("LINES_PER_RUN"));
    let runs: usize = args.next().map_or(7, |a| a.parse().expect("RUNS"));
    println!("{n} lines per run, median of {runs} runs, CPU ns/line");
    println!(
        "{:<14} {:>14} {:>22} {:>22} {:>9}",
        "format", "log_proxy", "syslog_loose +year", "syslog_loose default", "speed-up"
    );
    for format in ["rfc5424micro", "rfc3164"] {
        let input = lines(format);
        // Same answers first: the comparison is only fair if both find tag and message.
        for l in &input {
            let a = log_proxy::syslog::parse(l).expect("log_proxy parses");
            let s = std::str::from_utf8(l).unwrap();
            let b = syslog_loose::parse_message_with_year(s, |_| 2026, Variant::Either);
            assert_eq!(std::str::from_utf8(a.tag).unwrap(), b.appname.unwrap_or(""));
            assert_eq!(
                std::str::from_utf8(a.msg).unwrap(),
                b.msg.trim_end_matches('\n')
            );
        }
        let a = measure(&input, n, runs, ours);
        let b = measure(&input, n, runs, loose_fixed_year);
        let c = measure(&input, n / 4, runs, loose_default);
        println!("{format:<14} {a:>14.1} {b:>22.1} {c:>22.1} {:>8.1}x", b / a);
    }
    // Docker's default format (no syslog-format): no hostname, a local form to log-proxy;
    // syslog_loose would read the tag as a hostname, so only ours is timed.
    let a = measure(&lines("docker-default"), n, runs, ours);
    println!(
        "{:<14} {a:>14.1} {:>22} {:>22} {:>9}",
        "docker-default", "-", "-", "-"
    );
    framer_bench(runs);
}

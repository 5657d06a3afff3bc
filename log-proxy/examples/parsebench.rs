//! Parser micro-benchmark: `log_proxy::syslog::parse` against `syslog_loose` on the lines
//! Docker's syslog driver sends (`rfc5424micro`, `rfc3164`).
//!
//! `syslog_loose` takes `&str`, so its column includes the UTF-8 check the proxy would need
//! on received bytes (and a line with non-UTF-8 bytes could not go through it at all); its
//! RFC 3164 path asks for the current year, so it is measured with a fixed year (`+year`)
//! and with the default `parse_message` (which reads the local clock and time zone).
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
                _ => format!("<30>Nov 22 13:32:28 vm {id}[3076]: {payload}\n"),
            }
            .into_bytes()
        })
        .collect()
}

/// Median ns/line of `runs` runs of `n` parses each.
fn measure(input: &[Vec<u8>], n: usize, runs: usize, f: impl Fn(&[u8]) -> usize) -> f64 {
    let mut results: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let mut acc = 0usize;
            for i in 0..n {
                acc = acc.wrapping_add(f(black_box(&input[i % input.len()])));
            }
            black_box(acc);
            start.elapsed().as_nanos() as f64 / n as f64
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

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(2_000_000, |a| a.parse().expect("LINES_PER_RUN"));
    let runs: usize = args.next().map_or(7, |a| a.parse().expect("RUNS"));
    println!("{n} lines per run, median of {runs} runs, ns/line");
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
}

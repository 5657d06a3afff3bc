//! A contract receiver for the benchmark (bench/sinks.sh): `bench_receiver loggly|logdna TOKEN N`
//! prints its URL on stdout, checks every request as the tests do, and exits once N events have
//! arrived (non-zero if any request broke the API contract).

#[path = "../tests/support/receivers.rs"]
mod receivers;

use std::io::Write;
use std::time::{Duration, Instant};

use receivers::{Api, Receiver};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (api, token, expect) = match args.as_slice() {
        [_, api, token, n] => (api.as_str(), token.clone(), n.parse::<usize>().expect("N")),
        _ => {
            eprintln!("usage: bench_receiver loggly|logdna TOKEN EXPECTED_EVENTS");
            std::process::exit(2);
        }
    };
    let api = match api {
        "loggly" => Api::LogglyBulk { token },
        "logdna" => Api::LogdnaIngest { key: token },
        other => panic!("unknown api {other}"),
    };
    let rx = Receiver::start(api);
    println!("{}", rx.url());
    std::io::stdout().flush().unwrap();
    let mut total = 0;
    let mut first: Option<Instant> = None;
    while total < expect {
        {
            // Count and forget, so a long run does not keep every event in memory.
            let mut st = rx.state();
            if !st.events.is_empty() {
                first.get_or_insert_with(Instant::now);
            }
            total += st.events.len();
            st.events.clear();
            if !st.violations.is_empty() {
                eprintln!(
                    "contract violations: {:#?}",
                    &st.violations[..st.violations.len().min(5)]
                );
                std::process::exit(1);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = rx.state();
    eprintln!(
        "received {total} events in {} requests ({:.2}s from the first)",
        st.requests,
        first.map_or(0.0, |f| f.elapsed().as_secs_f64())
    );
}

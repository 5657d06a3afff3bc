//! A contract receiver for the benchmark (bench/sinks.sh): `bench_receiver loggly|logdna TOKEN
//! COUNT_FILE` prints its URL on stdout, checks every request as the tests do, and keeps the
//! number of events received in COUNT_FILE until it is killed. It exits non-zero at the first
//! request that breaks the API contract. `BENCH_RECEIVER_DELAY_MS=N` answers each request N ms
//! late, as a distant service does.

#[path = "../tests/support/receivers.rs"]
mod receivers;

use std::io::Write;
use std::time::Duration;

use receivers::{Api, Receiver};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (api, token, count_file) = match args.as_slice() {
        [_, api, token, file] => (api.as_str(), token.clone(), file.clone()),
        _ => {
            eprintln!("usage: bench_receiver loggly|logdna TOKEN COUNT_FILE");
            std::process::exit(2);
        }
    };
    let api = match api {
        "loggly" => Api::LogglyBulk { token },
        "logdna" => Api::LogdnaIngest { key: token },
        other => panic!("unknown api {other}"),
    };
    let rx = Receiver::start(api);
    // BENCH_RECEIVER_DELAY_MS: answer each request this late, as a distant service would.
    if let Some(ms) = std::env::var("BENCH_RECEIVER_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
    {
        rx.set(|b| b.delay = Some(Duration::from_millis(ms)));
    }
    println!("{}", rx.url());
    std::io::stdout().flush().unwrap();
    let tmp = format!("{count_file}.tmp");
    let mut total = 0;
    loop {
        let added = {
            // Count and forget, so a long run does not keep every event in memory.
            let mut st = rx.state();
            if !st.violations.is_empty() {
                eprintln!(
                    "contract violations: {:#?}",
                    &st.violations[..st.violations.len().min(5)]
                );
                std::process::exit(1);
            }
            let n = st.events.len();
            st.events.clear();
            n
        };
        if added > 0 {
            total += added;
            std::fs::write(&tmp, total.to_string()).unwrap();
            std::fs::rename(&tmp, &count_file).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

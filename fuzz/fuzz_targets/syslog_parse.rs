//! `log_proxy::syslog::parse` on arbitrary bytes: never panics, and what it returns borrows
//! from the input (tag, pid and message are slices of it, severity and facility in range).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(m) = log_proxy::syslog::parse(data) {
        assert!(m.severity <= 7);
        assert!(m.facility <= 124);
        let range = data.as_ptr_range();
        for part in [m.tag, m.msg, m.container_ref(), m.pid.unwrap_or_default()] {
            if !part.is_empty() {
                assert!(range.contains(&part.as_ptr()));
                assert!(part.len() <= data.len());
            }
        }
    }
});

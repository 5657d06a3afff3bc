//! Against a real private journald: text, binary-safe and memfd-sized entries arrive intact.

use journal_native::Journal;
use std::time::Duration;
use testkit::{field, field_bytes, Journald};

#[test]
fn entries_arrive_byte_for_byte_in_a_real_journald() {
    let jd = Journald::start();
    let j = Journal::new(jd.socket()).unwrap();
    let binary: Vec<u8> = b"multi\nline \xff\xfe not utf8\0nul".to_vec();
    let big = "x".repeat(3 * 1024 * 1024); // larger than any datagram: memfd path
    j.send(&[
        ("MESSAGE", b"hello"),
        ("TESTCASE", b"a"),
        ("SYSLOG_IDENTIFIER", b"t"),
    ])
    .unwrap();
    j.send(&[("MESSAGE", &binary), ("TESTCASE", b"b")]).unwrap();
    j.send(&[("MESSAGE", big.as_bytes()), ("TESTCASE", b"c")])
        .unwrap();
    let n = j
        .send_many(&[b"MESSAGE=m1\nTESTCASE=d\n", b"MESSAGE=m2\nTESTCASE=d\n"])
        .unwrap();
    assert!(n >= 1);
    if n == 1 {
        j.send_encoded(b"MESSAGE=m2\nTESTCASE=d\n").unwrap();
    }

    let e = jd.wait_for_count(&["TESTCASE=a"], 1, Duration::from_secs(10));
    assert_eq!(field(&e[0], "MESSAGE").unwrap(), "hello");
    let e = jd.wait_for_count(&["TESTCASE=b"], 1, Duration::from_secs(10));
    assert_eq!(field_bytes(&e[0], "MESSAGE").unwrap(), binary);
    let e = jd.wait_for_count(&["TESTCASE=c"], 1, Duration::from_secs(10));
    assert_eq!(field(&e[0], "MESSAGE").unwrap().len(), big.len());
    let e = jd.wait_for_count(&["TESTCASE=d"], 2, Duration::from_secs(10));
    assert_eq!(field(&e[1], "MESSAGE").unwrap(), "m2");
}

#[test]
fn a_missing_journald_is_reported_not_hidden() {
    let j = Journal::new("/run/systemd/journal.no-such-namespace-here/socket").unwrap();
    let err = j.send(&[("MESSAGE", b"x")]).unwrap_err();
    assert!(err.is_not_running(), "{err}");
    assert!(err.to_string().contains("not running"), "{err}");
}

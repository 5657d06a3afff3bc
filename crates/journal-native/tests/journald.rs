//! Against a real private journald: text, binary-safe and large entries arrive intact, both as
//! datagrams and through a sealed memfd.

use journal_native::Journal;
use std::time::Duration;
use testkit::{field, field_bytes, Journald};

#[test]
fn entries_arrive_byte_for_byte_in_a_real_journald() {
    let jd = Journald::start();
    let j = Journal::new(jd.socket()).unwrap();
    let binary: Vec<u8> = b"multi\nline \xff\xfe not utf8\0nul".to_vec();
    // 3 MiB: one datagram where net.core.wmem_max allows it (4 MiB here), else a memfd.
    let big = "x".repeat(3 * 1024 * 1024);
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

#[test]
fn an_entry_larger_than_the_send_buffer_goes_through_a_memfd() {
    let jd = Journald::start();
    let j = Journal::new(jd.socket()).unwrap();
    // With 64 KiB of send buffer a 1 MiB datagram cannot be sent at all, so an entry that
    // arrives went through the memfd path.
    j.set_send_buffer(64 * 1024).unwrap();
    let big: Vec<u8> = (0..1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    j.send(&[("MESSAGE", &big), ("TESTCASE", b"memfd")])
        .unwrap();
    let e = jd.wait_for_count(&["TESTCASE=memfd"], 1, Duration::from_secs(10));
    assert_eq!(field_bytes(&e[0], "MESSAGE").unwrap(), big);
}

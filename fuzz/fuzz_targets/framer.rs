//! `log_proxy::intake::Framer` fed the input in chunks chosen by the input itself: never
//! panics, and the messages it yields do not depend on where the chunks were cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_proxy::intake::{Framer, Messages};

fn frames(data: &[u8], cuts: &[u8]) -> Vec<Vec<u8>> {
    let mut framer = Framer::default();
    let mut out = Messages::default();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = if cuts.is_empty() {
            rest.len()
        } else {
            (cuts[i % cuts.len()] as usize + 1).min(rest.len())
        };
        framer.feed(&rest[..n], &mut out);
        rest = &rest[n..];
        i += 1;
    }
    framer.finish(&mut out);
    out.iter().map(|m| m.to_vec()).collect()
}

fuzz_target!(|input: &[u8]| {
    // First byte: how many cut sizes follow; then the stream.
    let Some((&k, rest)) = input.split_first() else {
        return;
    };
    let k = (k as usize % 16).min(rest.len());
    let (cuts, data) = rest.split_at(k);
    let whole = frames(data, &[]);
    let chunked = frames(data, cuts);
    assert_eq!(whole, chunked, "framing depends on chunk boundaries");
});

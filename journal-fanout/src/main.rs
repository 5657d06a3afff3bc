//! journal-fanout: journald -> per-destination pipelines -> CloudWatch Logs / Loggly / LogDNA.
#[allow(dead_code)]
mod sinks;
fn main() {}

//! `log-proxy`: a syslog server for Docker's syslog log driver that rate-limits each
//! container on its own, adds the container's Docker metadata, and writes every accepted line
//! into journald with the fields Docker's journald driver uses — and says so, in the
//! container's own log, when it drops lines and how many.
//!
//! Data flows one way:
//! [`intake`] (socket, bound or inherited through [`activation`]) → [`proxy`] ([`syslog`] parse, [`docker`] metadata, [`limiter`]) →
//! [`journal`] (writer). For datagram listeners one thread runs it all while journald keeps
//! up (hand-offs between threads measured as the main cost); stream listeners get intake
//! threads, and a writer thread takes over whenever journald would block. The library exists
//! so benchmarks and the fuzzer reach the stages.

pub mod activation;
pub mod check;
pub mod docker;
pub mod episode;
pub mod intake;
pub mod journal;
pub mod limiter;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod syslog;
pub mod trust;

//! Operational plumbing shared by `log-proxy` and `journal-fanout`.

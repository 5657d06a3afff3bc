//! Test support of my own (the contract receivers) shared by the integration tests.
pub mod receivers;

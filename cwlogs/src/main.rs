//! cwlogs: list, fetch and follow a service's CloudWatch logs from a terminal.
fn main() {}

// Sets LOGSUITE_VERSION ("VERSION (rev GITREV)") for `cwlogs --version`.
fn main() {
    build_info::emit();
}

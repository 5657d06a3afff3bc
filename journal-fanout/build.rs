// Sets LOGSUITE_VERSION ("VERSION (rev GITREV)") for `journal-fanout --version`.
fn main() {
    build_info::emit();
}

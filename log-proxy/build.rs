// Sets LOGSUITE_VERSION ("VERSION (rev GITREV)") for `log-proxy --version`.
fn main() {
    build_info::emit();
}

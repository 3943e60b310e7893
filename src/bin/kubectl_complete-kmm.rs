//! `kubectl kmm <TAB>`: kubectl (1.26+) runs `kubectl_complete-kmm <words…>` from `PATH`.
//! `cargo install` puts this binary next to `kubectl-kmm` (archives and krew ship the
//! equivalent one-line script, krew/kubectl_complete-kmm).

fn main() -> std::process::ExitCode {
    kubectl_kmm::complete_main()
}

fn main() -> std::process::ExitCode {
    kubectl_kmm::main()
}

fn main() -> std::process::ExitCode {
    wa_outbox::cli::main()
}

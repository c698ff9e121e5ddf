fn main() -> std::process::ExitCode {
    wa_outbox::child::die_with_parent_if_asked();
    wa_outbox::cli::main()
}

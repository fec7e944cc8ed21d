fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == agentvm_sandbox::init::SUBCOMMAND) {
        agentvm_sandbox::init::main();
    }
}

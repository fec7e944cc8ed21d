//! The `agentvm` binary. It is also every VM's init: `agentvm vm-init` (hidden, started by the
//! sandbox launcher) runs before anything else so that PID 1 of a VM stays small.

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == agentvm_sandbox::init::SUBCOMMAND) {
        agentvm_sandbox::init::main();
    }
    eprintln!(
        "agentvm {}: an operating system for AI agents.\n\n\
         This build provides the VM core (the agentvm-vm library) and the VM init.\n\
         The server (`agentvm serve`) and the CLI are being built; see README.md.",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}

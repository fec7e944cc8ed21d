//! The `agentvm` command. It is also every VM's init: `agentvm vm-init` (hidden, started by the
//! sandbox launcher) is dispatched before anything else so that PID 1 of a VM stays small.

mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agentvm",
    version,
    about = "An operating system for AI agents: isolated Linux VMs with processes, shells and files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: VMs as actors over the RivetKit protocol (HTTP actions, WebSocket events)
    Serve(serve::ServeArgs),
}

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == agentvm_sandbox::init::SUBCOMMAND) {
        agentvm_sandbox::init::main();
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == agentvm_sandbox::fsops::SUBCOMMAND) {
        agentvm_sandbox::fsops::main();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    if let Err(e) = result {
        eprintln!("agentvm: {e:#}");
        std::process::exit(1);
    }
}

//! The `agentvm` command. It is also the launcher of every VM's init (`agentvm vm-launcher`,
//! whose forks run init) and the VM's file helper (`agentvm vm-fs`): those hidden subcommands are dispatched before anything else so that the
//! processes inside a VM stay small.

mod commands;
mod fd_limit;
mod serve;
mod terminal;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agentvm",
    version,
    about = "An operating system for AI agents: isolated Linux VMs with processes, shells and files",
    after_help = "Start a server with `agentvm serve`, then for example:\n  agentvm exec demo -- echo hello\n  agentvm shell demo\n  agentvm ps demo"
)]
struct Cli {
    /// Server URL
    #[arg(long, global = true, env = "AGENTVM_URL", default_value = agentvm_client::DEFAULT_URL)]
    url: String,
    /// Token, if the server requires one
    #[arg(long, global = true, env = "AGENTVM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: VMs as actors over the RivetKit protocol (HTTP actions, WebSocket events)
    Serve(Box<serve::ServeArgs>),
    /// Run a command in a VM, streaming its output; exits with the command's exit code
    Exec(commands::exec::ExecArgs),
    /// Open an interactive shell in a VM (Ctrl-] detaches)
    Shell(commands::exec::ShellArgs),
    /// Show a VM's processes as a tree
    Ps(commands::processes::PsArgs),
    /// Send a signal to a process in a VM
    Kill(commands::processes::KillArgs),
    /// Show a VM's events (process output, exits, shells, boots); -f to follow
    Logs(commands::logs::LogsArgs),
    /// Copy a file between the host and a VM: `cp ./a KEY:/home/user/a` or `cp KEY:/path ./b`
    Cp(commands::files::CpArgs),
    /// List a directory in a VM
    Ls(commands::files::LsArgs),
    /// Print a file of a VM
    Cat(commands::files::CatArgs),
    /// Print the web inspector's address (of one VM with KEY) and open it in the desktop's browser
    Inspect(commands::inspect::InspectArgs),
    /// Manage VMs
    #[command(subcommand)]
    Vm(commands::vms::VmCommand),
    /// Install and list coding agents (the data directory's shared software layer)
    #[command(subcommand)]
    Agents(commands::agents::AgentsCommand),
    /// Print shell completions: `agentvm completions bash > /etc/bash_completion.d/agentvm`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() {
    let mut args = std::env::args_os();
    match args.nth(1) {
        Some(a) if a == agentvm_sandbox::init::SUBCOMMAND => agentvm_sandbox::init::main(),
        Some(a) if a == agentvm_sandbox::fsops::SUBCOMMAND => agentvm_sandbox::fsops::main(),
        Some(a) if a == agentvm_sandbox::launcher::SUBCOMMAND => agentvm_sandbox::launcher::main(),
        _ => {}
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => report(serve::run(*args)),
        Command::Agents(command) => report(commands::agents::run(command)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "agentvm", &mut std::io::stdout());
            0
        }
        command => {
            let client = {
                let client = agentvm_client::Client::new(cli.url);
                match cli.token.filter(|t| !t.is_empty()) {
                    Some(token) => client.with_token(token),
                    None => client,
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("agentvm: starting the async runtime: {e}");
                    std::process::exit(1);
                }
            };
            runtime.block_on(async move {
                match command {
                    Command::Exec(args) => commands::exec::exec(&client, args).await,
                    Command::Shell(args) => commands::exec::shell(&client, args).await,
                    Command::Ps(args) => report(commands::processes::ps(&client, args).await),
                    Command::Kill(args) => report(commands::processes::kill(&client, args).await),
                    Command::Logs(args) => report(commands::logs::logs(&client, args).await),
                    Command::Cp(args) => report(commands::files::cp(&client, args).await),
                    Command::Ls(args) => report(commands::files::ls(&client, args).await),
                    Command::Cat(args) => report(commands::files::cat(&client, args).await),
                    Command::Vm(command) => report(commands::vms::run(&client, command).await),
                    Command::Inspect(args) => report(commands::inspect::inspect(&client, args).await),
                    Command::Serve(_) | Command::Agents(_) | Command::Completions { .. } => {
                        unreachable!("handled above")
                    }
                }
            })
        }
    };
    std::process::exit(code);
}

/// Prints an error the way every command does and turns the result into an exit code.
fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("agentvm: {e:#}");
            1
        }
    }
}

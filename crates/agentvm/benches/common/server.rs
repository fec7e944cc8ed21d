//! A real `agentvm serve` for the benchmarks (each bench binary includes this file).
#![allow(dead_code, reason = "each bench uses only some of these helpers")]

/// Starts `agentvm serve` on a random port with `extra` options; returns the process and its
/// base URL.
pub fn start_server(data: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    start_server_binary(std::path::Path::new(env!("CARGO_BIN_EXE_agentvm")), data, extra)
}

/// [`start_server`] with another agentvm binary (a build of an earlier commit, to compare).
pub fn start_server_binary(
    binary: &std::path::Path,
    data: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, String) {
    let mut command = std::process::Command::new(binary);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("AGENTVM_LOG", std::env::var("AGENTVM_LOG").unwrap_or_else(|_| "warn".into()));
    launch(command)
}

/// [`start_server`] with variables `env`, logging at `info` into the file `log`.
pub fn start_server_logged(
    data: &std::path::Path,
    extra: &[&str],
    env: &[(&str, String)],
    log: &std::path::Path,
) -> (std::process::Child, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agentvm"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("AGENTVM_LOG", "info")
        .stderr(std::fs::File::create(log).unwrap());
    launch(command)
}

/// Starts `command` and waits for its "listening" line; the process and its base URL.
fn launch(mut command: std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = command.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("agentvm listening on "))
        .expect("server did not start");
    let url = line.trim_start_matches("agentvm listening on ").split_whitespace().next().unwrap().to_string();
    (child, url)
}

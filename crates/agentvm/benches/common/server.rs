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
    use std::io::BufRead;
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("AGENTVM_LOG", std::env::var("AGENTVM_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("agentvm listening on "))
        .expect("server did not start");
    let url = line.trim_start_matches("agentvm listening on ").split_whitespace().next().unwrap().to_string();
    (child, url)
}

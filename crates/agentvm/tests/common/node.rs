//! The real rivetkit npm client (2.3.19, `clients/node/v2.3.19`) running one scenario of
//! `clients/node/*.mjs` against a test server, as the Node scenario tests do.
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The client's directory; fails the test when its `npm install` has not run.
pub fn client_dir() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/node/v2.3.19");
    assert!(dir.join("node_modules/rivetkit").is_dir(), "run `npm install` in {} (scripts/test does)", dir.display());
    dir
}

/// `node run.mjs` for `scenario` against `endpoint`, in `encoding`, on VM `key` (more variables
/// may be added before it runs).
pub fn scenario(endpoint: &str, encoding: &str, key: &str, scenario: &str) -> Command {
    let dir = client_dir();
    let mut command = Command::new("node");
    command
        .arg(dir.join("run.mjs"))
        .current_dir(&dir)
        .env("ENDPOINT", endpoint)
        .env("ENCODING", encoding)
        .env("KEY", key)
        .env("SCENARIO", scenario)
        .env_remove("RIVET_ENDPOINT")
        .env_remove("RIVET_ENGINE");
    command
}

/// Asserts that a scenario's run passed every check (its `{"done":true}` line).
pub fn assert_done(what: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(r#""done":true"#),
        "{what}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

//! The real pi coding agent for tests (acp-agents.md §3.2–3.3): pi-acp 0.0.23 with
//! @mariozechner/pi-coding-agent 0.73.1, the pair verified on Node 20, pinned with every transitive
//! package by tests/fixtures/pi/package-lock.json.
//!
//! [`install`] runs `npm ci` once into `target/agents-cache/pi` and reuses that install while the
//! lock file is unchanged; without npm or the registry it fails the test and says so (no silent
//! skip). Launch `<install>/node_modules/.bin/pi-acp` with `node_modules/.bin` first on `PATH` (it
//! runs `pi`), and the env `PI_CODING_AGENT_DIR=<dir holding the config of [`write_config`]>`,
//! `PI_OFFLINE=1`, `HOME=<a fresh dir>`. pi keeps its sessions in `<agent dir>/sessions/` and
//! pi-acp its session map in `$HOME/.pi/pi-acp/`: both must survive for `session/load`.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::Command;

use super::mock_llm::OPENAI_MODEL;

/// Shared by every test binary and kept across runs, like the build itself.
pub fn agents_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target dir").join("agents-cache")
}

/// Installs pi once and returns the directory holding its `node_modules`. The install goes to a
/// staging directory renamed into place, so an interrupted or concurrent install is never half-seen.
pub async fn install() -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pi");
    let lock = std::fs::read(fixture.join("package-lock.json")).expect("the pi lock file");
    let dir = agents_cache().join("pi");
    let installed = |d: &Path| {
        d.join("node_modules/.bin/pi-acp").exists()
            && std::fs::read(d.join("package-lock.json")).ok() == Some(lock.clone())
    };
    if installed(&dir) {
        return dir;
    }
    let staging = agents_cache().join(format!("pi.staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("the staging dir");
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(fixture.join(file), staging.join(file)).expect("copying the pi manifest");
    }
    let started = Instant::now();
    // No install scripts: pi needs none, and the packages' own scripts never run on the test machine.
    let npm = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(&staging)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), npm)
        .await
        .expect("`npm ci` for pi took over 10 minutes")
        .expect("running npm (is Node.js 20+ with npm installed?)");
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(
        output.status.success(),
        "installing pi from npm failed (is the npm registry reachable?): `npm ci` for {} exited with {}:\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("pi installed with npm ci in {:.1} s", started.elapsed().as_secs_f64());
    if !installed(&dir) {
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&staging, &dir).is_ok() {
            return dir;
        }
    }
    // Another run installed it meanwhile.
    let _ = std::fs::remove_dir_all(&staging);
    assert!(installed(&dir), "pi is not installed in {}", dir.display());
    dir
}

/// Writes pi's `models.json` and `settings.json` into `agent_dir` (its `PI_CODING_AGENT_DIR`):
/// an OpenAI-compatible provider at `base_url` (e.g. `http://127.0.0.1:<port>/v1`) as the only
/// provider and default model. The API key is a literal (not an env name, not a `!command`).
pub fn write_config(agent_dir: &Path, base_url: &str) {
    std::fs::create_dir_all(agent_dir).expect("pi's agent dir");
    let models = json!({"providers": {"mock": {
        "baseUrl": base_url,
        "api": "openai-completions",
        "apiKey": "mock-key",
        "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
        "models": [{"id": OPENAI_MODEL}]
    }}});
    std::fs::write(agent_dir.join("models.json"), models.to_string()).expect("models.json");
    let settings = json!({"defaultProvider": "mock", "defaultModel": OPENAI_MODEL, "quietStartup": true});
    std::fs::write(agent_dir.join("settings.json"), settings.to_string()).expect("settings.json");
}

//! Fetches the inspector's front-end libraries — xterm.js and its fit add-on, at the versions
//! pinned by `npm/package-lock.json` (integrity hashes included) — with `npm ci` into the build
//! directory, and copies the files the inspector serves next to them, so that `src/lib.rs`
//! embeds them. Nothing of them is checked into the repository.
//!
//! Needs Node.js's `npm` and the npm registry (or npm's cache) the first time a build directory
//! is made; later builds reuse it. `AGENTVM_NPM` names another npm program.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (file in node_modules, name it is served as).
const FILES: &[(&str, &str)] = &[
    ("@xterm/xterm/lib/xterm.mjs", "xterm.mjs"),
    ("@xterm/xterm/css/xterm.css", "xterm.css"),
    ("@xterm/xterm/LICENSE", "xterm.LICENSE"),
    ("@xterm/addon-fit/lib/addon-fit.mjs", "addon-fit.mjs"),
    ("@xterm/addon-fit/LICENSE", "addon-fit.LICENSE"),
];

fn main() {
    println!("cargo:rerun-if-changed=npm/package.json");
    println!("cargo:rerun-if-changed=npm/package-lock.json");
    println!("cargo:rerun-if-env-changed=AGENTVM_NPM");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let work = out.join("npm");
    std::fs::create_dir_all(&work).expect("creating the npm work directory");
    let mut changed = false;
    for name in ["package.json", "package-lock.json"] {
        let from = std::fs::read(manifest.join("npm").join(name)).expect("reading the inspector's npm manifest");
        let to = work.join(name);
        if std::fs::read(&to).ok().as_deref() != Some(&from[..]) {
            std::fs::write(&to, &from).expect("copying the inspector's npm manifest");
            changed = true;
        }
    }
    let modules = work.join("node_modules");
    if changed || !FILES.iter().all(|(file, _)| modules.join(file).is_file()) {
        install(&work);
    }
    let vendor = out.join("vendor");
    std::fs::create_dir_all(&vendor).expect("creating the vendor directory");
    for (file, name) in FILES {
        std::fs::copy(modules.join(file), vendor.join(name))
            .unwrap_or_else(|e| panic!("copying {file} from the installed packages: {e}"));
    }
}

fn install(work: &Path) {
    let npm = std::env::var("AGENTVM_NPM").unwrap_or_else(|_| "npm".into());
    let status = Command::new(&npm)
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(work)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "`{npm} ci` for the inspector's front-end libraries failed ({status}): is the npm registry reachable? \
             (crates/inspector/build.rs)"
        ),
        Err(e) => panic!(
            "cannot run `{npm}` ({e}): building agentvm's inspector needs Node.js and npm (Debian: apt-get install nodejs npm) \
             to fetch xterm.js at the pinned version (crates/inspector/build.rs)"
        ),
    }
}

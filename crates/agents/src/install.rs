//! Installing a built-in agent into the software layer (`agentvm agents install NAME`).
//!
//! Steps, under an exclusive lock beside the layer (`<data>/software.lock`; concurrent installs
//! wait for each other, VMs and servers never take it):
//! 1. nothing to do when the marker already names exactly the pinned versions;
//! 2. `npm install --prefix <data>/software/.staging/<id>-<pid> --ignore-scripts --no-audit
//!    --no-fund` with the agent's `package.json` and lock file ([`AgentSpec::lock`]) in place:
//!    every package at the version and integrity hash the lock names (from the npm cache in
//!    `~/.npm` when it has them);
//! 3. the install scripts of the packages the entry names, alone (`npm rebuild NAME`):
//!    `--ignore-scripts` keeps every other dependency's scripts from running on the host;
//! 4. every file made readable (and directories searchable) by all, since VM users are other
//!    uids than the installer; the filesystem synced;
//! 5. the marker written last, then the directory renamed to `<data>/software/agents/<id>` —
//!    or, when an older install is there, atomically exchanged with it (`renameat2(
//!    RENAME_EXCHANGE)`) and the old one deleted. A VM sees the old install or the new one,
//!    never a mix, so installing while a server runs is safe.
//!
//! A failed install leaves nothing behind (the staging directory is removed; stale ones from a
//! killed install are removed by the next install).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::layer::{Marker, SoftwareLayer, MARKER};
use crate::spec::AgentSpec;

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The agent was already installed at its pinned versions; nothing was run.
    AlreadyInstalled,
    /// Installed now.
    Installed {
        duration: Duration,
        /// Size of the agent's directory (file contents) and its number of files.
        bytes: u64,
        files: u64,
    },
}

/// Why an install failed. Nothing of it is left in the software layer.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("unknown agent `{id}`; the known agents are: {}", known.join(", "))]
    UnknownAgent { id: String, known: Vec<String> },
    #[error("agent `{id}` is declared in the server's config file: agentvm installs nothing for it")]
    NotInstallable { id: String },
    #[error("npm was not found (`{program}`): install Node.js 20+ and npm, e.g. `apt-get install nodejs npm`")]
    NpmMissing { program: String },
    #[error("the npm registry could not be reached ({detail}); check the network or npm's `registry` setting")]
    RegistryUnreachable { detail: String },
    #[error("`{command}` failed ({status}):\n{output}")]
    NpmFailed { command: String, status: String, output: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> InstallError {
    let what = what.into();
    move |source| InstallError::Io { what, source }
}

/// Installs `agent` into `layer` with the `npm` found on `PATH`.
pub fn install(agent: &AgentSpec, layer: &SoftwareLayer) -> Result<Installed, InstallError> {
    install_with(agent, layer, OsStr::new("npm"))
}

/// [`install`] with another npm program.
pub fn install_with(agent: &AgentSpec, layer: &SoftwareLayer, npm: &OsStr) -> Result<Installed, InstallError> {
    if layer.is_installed(agent) {
        return Ok(Installed::AlreadyInstalled);
    }
    let started = Instant::now();
    make_public_dir(layer.dir())?;
    let lock_path = layer.lock_path();
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(format!("opening {}", lock_path.display())))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| InstallError::Io { what: format!("locking {}", lock_path.display()), source: e.into() })?;
    // Another install may have finished while we waited.
    if layer.is_installed(agent) {
        return Ok(Installed::AlreadyInstalled);
    }

    // Only installs write here, and we hold the lock: anything present is a killed install's.
    let staging = layer.staging_dir();
    remove_if_exists(&staging)?;
    make_public_dir(&staging)?;
    let work = Staged(staging.join(format!("{}-{}", agent.id, std::process::id())));
    fs::create_dir(&work.0).map_err(io_error(format!("creating {}", work.0.display())))?;

    let manifest = serde_json::to_vec_pretty(&agent.package_json())
        .map_err(|e| InstallError::Io { what: "writing package.json".into(), source: io::Error::other(e) })?;
    for (name, content) in [("package.json", manifest.as_slice()), ("package-lock.json", agent.lock.as_bytes())] {
        let path = work.0.join(name);
        fs::write(&path, content).map_err(io_error(format!("writing {}", path.display())))?;
    }
    // `npm install` with the lock in place installs what the lock names. Not `npm ci`: npm 11
    // leaves other platforms' optional packages (opencode's darwin and windows binaries) out of
    // the lock files it writes, and `npm ci` then refuses those very files as out of sync.
    let mut args: Vec<OsString> = ["install", "--prefix"].map(OsString::from).to_vec();
    args.push(work.0.clone().into_os_string());
    args.extend(
        ["--ignore-scripts", "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error"].map(OsString::from),
    );
    run_npm(npm, &args)?;
    for package in agent.install_scripts_of {
        let mut args: Vec<OsString> =
            ["rebuild", package, "--ignore-scripts=false", "--prefix"].map(OsString::from).to_vec();
        args.push(work.0.clone().into_os_string());
        run_npm(npm, &args)?;
    }

    let (bytes, files) = make_readable(&work.0)?;
    let dir = fs::File::open(&work.0).map_err(io_error(format!("opening {}", work.0.display())))?;
    nix::unistd::syncfs(&dir)
        .map_err(|e| InstallError::Io { what: "syncing the installed files".into(), source: e.into() })?;
    write_marker(&work.0, &Marker { id: agent.id.to_string(), packages: agent.pins() })?;

    let agents = layer.dir().join("agents");
    make_public_dir(&agents)?;
    let target = layer.agent_dir(agent.id);
    if target.exists() {
        // Atomically swap the old install out; `work` then names the old one and is removed.
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &work.0,
            nix::fcntl::AT_FDCWD,
            &target,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| InstallError::Io { what: format!("replacing {}", target.display()), source: e.into() })?;
    } else {
        fs::rename(&work.0, &target).map_err(io_error(format!("moving the install to {}", target.display())))?;
    }
    if let Ok(dir) = fs::File::open(&agents) {
        let _ = dir.sync_all();
    }
    drop(work);
    Ok(Installed::Installed { duration: started.elapsed(), bytes, files })
}

/// Runs npm with `args`; its output is kept for the error.
fn run_npm(npm: &OsStr, args: &[OsString]) -> Result<(), InstallError> {
    let command = std::iter::once(npm).chain(args.iter().map(OsString::as_os_str)).map(|a| a.to_string_lossy());
    let command = command.collect::<Vec<_>>().join(" ");
    let output = Command::new(npm).args(args).stdin(Stdio::null()).output().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => InstallError::NpmMissing { program: npm.to_string_lossy().into_owned() },
        _ => InstallError::Io { what: format!("running `{command}`"), source: e },
    })?;
    if output.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if let Some(detail) = unreachable_registry(&text) {
        return Err(InstallError::RegistryUnreachable { detail });
    }
    Err(InstallError::NpmFailed { command, status: output.status.to_string(), output: tail(&text, 40) })
}

/// npm's network error codes; the line carrying one says which request failed.
fn unreachable_registry(output: &str) -> Option<String> {
    const CODES: [&str; 7] =
        ["ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "ENETUNREACH", "EHOSTUNREACH"];
    let code = CODES.iter().find(|code| output.contains(*code))?;
    let line = output
        .lines()
        .find(|l| l.contains("request to"))
        .or_else(|| output.lines().find(|l| l.contains(code)))
        .unwrap_or(code);
    Some(line.trim_start_matches("npm error").trim().to_string())
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes the staging directory when dropped (after a successful swap it holds the old install).
struct Staged(PathBuf);

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = remove_if_exists(&self.0);
    }
}

/// Makes every file under `dir` readable by all and every directory (and executable file)
/// searchable/executable by all, whatever the installer's umask: VM users are other uids.
/// Returns the bytes and number of regular files (a file with several hard links once: npm
/// links opencode's binary). Symbolic links are not followed.
fn make_readable(dir: &Path) -> Result<(u64, u64), InstallError> {
    let (mut bytes, mut files) = (0, 0);
    let mut linked = std::collections::HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).map_err(io_error(format!("reading {}", path.display())))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if meta.is_dir() || mode & 0o111 != 0 { mode | 0o555 } else { mode | 0o444 };
        // No set-id bits in a layer every VM shares (it is mounted nosuid anyway).
        let wanted = wanted & !0o6000;
        if wanted != mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(wanted))
                .map_err(io_error(format!("making {} readable", path.display())))?;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(io_error(format!("listing {}", path.display())))? {
                pending.push(entry.map_err(io_error(format!("listing {}", path.display())))?.path());
            }
        } else if meta.is_file() && (meta.nlink() == 1 || linked.insert((meta.dev(), meta.ino()))) {
            bytes += meta.len();
            files += 1;
        }
    }
    Ok((bytes, files))
}

fn write_marker(dir: &Path, marker: &Marker) -> Result<(), InstallError> {
    let path = dir.join(MARKER);
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&path)?;
        file.write_all(&serde_json::to_vec_pretty(marker).map_err(io::Error::other)?)?;
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.sync_all()
    };
    write().map_err(io_error(format!("writing {}", path.display())))
}

/// Creates `dir` (and parents) and makes it `0755`: VMs list the layer as other users.
fn make_public_dir(dir: &Path) -> Result<(), InstallError> {
    fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(io_error(format!("opening up {}", dir.display())))
}

fn remove_if_exists(path: &Path) -> Result<(), InstallError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(InstallError::Io { what: format!("removing {}", path.display()), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::PI;

    #[test]
    fn a_missing_npm_is_named_and_leaves_nothing() {
        let data = tempfile::tempdir().unwrap();
        let layer = SoftwareLayer::of_data_dir(data.path());
        let error = install_with(&PI, &layer, OsStr::new("/nonexistent/npm")).unwrap_err();
        assert!(matches!(error, InstallError::NpmMissing { .. }), "{error}");
        assert!(error.to_string().starts_with("npm was not found (`/nonexistent/npm`)"), "{error}");
        assert_eq!(fs::read_dir(layer.staging_dir()).unwrap().count(), 0);
        assert!(!layer.agent_dir("pi").exists());
    }

    #[test]
    fn an_unreachable_registry_is_told_apart_from_other_npm_failures() {
        let data = tempfile::tempdir().unwrap();
        let layer = SoftwareLayer::of_data_dir(data.path());
        let fake = data.path().join("npm");
        fs::write(
            &fake,
            "#!/bin/sh\necho 'npm error code ENOTFOUND' >&2\necho 'npm error request to https://registry.npmjs.org/pi-acp failed, reason: getaddrinfo ENOTFOUND registry.npmjs.org' >&2\nexit 1\n",
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let error = install_with(&PI, &layer, fake.as_os_str()).unwrap_err();
        let InstallError::RegistryUnreachable { detail } = &error else { panic!("{error}") };
        assert!(detail.starts_with("request to https://registry.npmjs.org/pi-acp failed"), "{detail}");

        fs::write(&fake, "#!/bin/sh\necho 'npm error code E404' >&2\nexit 1\n").unwrap();
        let error = install_with(&PI, &layer, fake.as_os_str()).unwrap_err();
        assert!(matches!(&error, InstallError::NpmFailed { output, .. } if output.contains("E404")), "{error}");
        assert!(!layer.agent_dir("pi").exists());
        assert_eq!(fs::read_dir(layer.staging_dir()).unwrap().count(), 0);
    }

    /// A stand-in for npm that "installs" one private file naming its own pid.
    fn fake_npm(dir: &Path) -> PathBuf {
        let npm = dir.join("fake-npm");
        let script = "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --prefix ] && prefix=$2; shift; done\n\
                      mkdir -p \"$prefix/node_modules/fake\" && echo $$ > \"$prefix/node_modules/fake/run\" && \
                      chmod 600 \"$prefix/node_modules/fake/run\"\n";
        fs::write(&npm, script).unwrap();
        fs::set_permissions(&npm, fs::Permissions::from_mode(0o755)).unwrap();
        npm
    }

    #[test]
    fn installs_once_and_replaces_an_install_of_other_versions_in_one_step() {
        let data = tempfile::tempdir().unwrap();
        let layer = SoftwareLayer::of_data_dir(data.path());
        let npm = fake_npm(data.path());
        let installed = install_with(&PI, &layer, npm.as_os_str()).unwrap();
        assert!(matches!(installed, Installed::Installed { files: 3, .. }), "{installed:?}");
        assert!(layer.is_installed(&PI));
        let run_file = layer.agent_dir("pi").join("node_modules/fake/run");
        let first_run = fs::read_to_string(&run_file).unwrap();
        assert_eq!(fs::metadata(&run_file).unwrap().permissions().mode() & 0o777, 0o644, "readable by VM users");
        assert_eq!(install_with(&PI, &layer, npm.as_os_str()).unwrap(), Installed::AlreadyInstalled);
        assert_eq!(fs::read_to_string(&run_file).unwrap(), first_run, "a second install runs nothing");

        // New pins for the same id: installed again, swapped in for the old install.
        let newer = AgentSpec { acp_adapter: crate::spec::Package { name: "pi-acp", version: "0.0.99" }, ..PI };
        assert!(!layer.is_installed(&newer));
        assert!(matches!(install_with(&newer, &layer, npm.as_os_str()).unwrap(), Installed::Installed { .. }));
        assert!(layer.is_installed(&newer) && !layer.is_installed(&PI));
        assert_ne!(fs::read_to_string(&run_file).unwrap(), first_run);
        assert_eq!(fs::read_dir(layer.staging_dir()).unwrap().count(), 0, "the old install is gone");
        let agents: Vec<_> =
            fs::read_dir(layer.dir().join("agents")).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(agents, ["pi"]);
    }

    #[test]
    fn permissions_are_opened_for_other_users_without_set_id_bits() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("f"), b"12345").unwrap();
        fs::write(sub.join("x"), b"1").unwrap();
        fs::hard_link(sub.join("x"), sub.join("x2")).unwrap();
        fs::set_permissions(sub.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(sub.join("x"), fs::Permissions::from_mode(0o4700)).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(make_readable(dir.path()).unwrap(), (6, 2));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&sub), 0o755);
        assert_eq!(mode(&sub.join("f")), 0o644);
        assert_eq!(mode(&sub.join("x")), 0o755);
    }
}

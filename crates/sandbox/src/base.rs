//! The base layer: the read-only lower layer shared by every VM of a host.
//!
//! It is a small directory tree built once per server start:
//!
//! - the top-level skeleton of a Linux system (`/dev`, `/proc`, `/tmp`, `/home`, `/var/tmp`...);
//! - `bin`, `sbin`, `lib*` mirrored from the host: symlinks stay symlinks (merged-`/usr` hosts),
//!   real directories become read-only bind mounts, like `/usr` itself;
//! - an `/etc` with a synthesized `passwd`, `group`, `hosts`, `hostname` and `resolv.conf`, plus a
//!   read-only copy of the parts of the host's `/etc` that programs need to run (dynamic linker
//!   cache, certificates, alternatives, time zone, shell profiles, terminfo, ...). Secrets are
//!   never copied: only the entries named in [`HOST_ETC_ENTRIES`] are considered, `ssl/private`
//!   is excluded, and any file or directory that is not world-readable is skipped.
//!
//! Every VM stacks its own writable upper layer on top (see [`crate::init`]), so changes a VM
//! makes to `/etc` or anywhere else stay in that VM's directory.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Bind;

/// `/etc/resolv.conf` of a VM without a name server (loopback only, or an egress proxy that
/// resolves names itself).
pub const RESOLV_CONF_NONE: &str =
    "# agentvm: this VM has no name server (loopback only, or names resolved by its proxy).\n";

/// `/etc/agentvm/node-proxy.cjs` in every VM: see the file.
const NODE_PROXY_PRELOAD: &str = include_str!("../assets/node-proxy.cjs");

/// Host `/etc` entries copied into the base layer (when present and world-readable).
pub const HOST_ETC_ENTRIES: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "bash_completion",
    "bash_completion.d",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "ethertypes",
    "gai.conf",
    "host.conf",
    "inputrc",
    "issue",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "login.defs",
    "lsb-release",
    "magic",
    "magic.mime",
    "mime.types",
    "nanorc",
    "nsswitch.conf",
    "os-release",
    "perl",
    "profile",
    "profile.d",
    "protocols",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
    "rpc",
    "services",
    "shells",
    "skel",
    "ssl",
    "terminfo",
    "timezone",
    "vim",
    "xdg",
];

/// Paths below `/etc` never copied even when world-readable.
const EXCLUDED: &[&str] = &["ssl/private"];

/// Directories of the skeleton and their modes.
const SKELETON: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("media", 0o755),
    ("mnt", 0o755),
    ("opt", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("srv", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("var", 0o755),
    ("var/cache", 0o755),
    ("var/lib", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
];

/// Top-level host directories that a VM shares read-only, when they exist.
const SYSTEM_DIRS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// A built base layer.
#[derive(Debug, Clone)]
pub struct BaseLayer {
    pub dir: PathBuf,
    /// Host directories every VM binds read-only (always `/usr`).
    pub readonly_binds: Vec<Bind>,
    /// Login shell of the VM user (`/bin/bash` when the host has bash).
    pub shell: String,
}

/// Options for [`build`].
pub struct BaseOptions<'a> {
    /// Where the host's system directories are (`/` normally; tests may point elsewhere).
    pub host_root: &'a Path,
    /// Host ids that own the tree, so that it is root-owned inside the VM.
    pub owner: (u32, u32),
    pub user_name: &'a str,
    pub user_id: u32,
}

/// Builds the base layer at `target`, replacing an older one.
pub fn build(target: &Path, options: &BaseOptions<'_>) -> io::Result<BaseLayer> {
    let staging = target.with_extension("building");
    remove_if_exists(&staging)?;
    fs::create_dir_all(&staging)?;
    for (dir, mode) in SKELETON {
        let path = staging.join(dir);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))?;
    }

    let host = options.host_root;
    let mut readonly_binds = vec![Bind { source: host.join("usr"), target: "/usr".into() }];
    for name in SYSTEM_DIRS {
        let host_path = host.join(name);
        let Ok(meta) = fs::symlink_metadata(&host_path) else { continue };
        if meta.file_type().is_symlink() {
            symlink(fs::read_link(&host_path)?, staging.join(name))?;
        } else if meta.is_dir() {
            fs::create_dir(staging.join(name))?;
            readonly_binds.push(Bind { source: host_path, target: format!("/{name}") });
        }
    }

    let shell = if host.join("usr/bin/bash").exists() { "/bin/bash" } else { "/bin/sh" }.to_string();
    let etc = staging.join("etc");
    for entry in HOST_ETC_ENTRIES {
        copy_readable(&host.join("etc").join(entry), &etc.join(entry), Path::new(entry))?;
    }
    write_identity_files(&etc, options, &shell)?;
    symlink("../proc/self/mounts", etc.join("mtab"))?;
    // Node.js before 22.21 ignores the proxy variables of VMs with an egress allow-list; this
    // preload (NODE_OPTIONS, set with them) makes its `fetch` use the proxy.
    fs::create_dir_all(etc.join("agentvm"))?;
    fs::write(etc.join("agentvm/node-proxy.cjs"), NODE_PROXY_PRELOAD)?;

    chown_tree(&staging, options.owner)?;
    remove_if_exists(target)?;
    fs::rename(&staging, target)?;
    Ok(BaseLayer { dir: target.to_path_buf(), readonly_binds, shell })
}

fn write_identity_files(etc: &Path, options: &BaseOptions<'_>, shell: &str) -> io::Result<()> {
    let (name, id) = (options.user_name, options.user_id);
    fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:{shell}\n\
             {name}:x:{id}:{id}:{name}:/home/{name}:{shell}\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
    )?;
    fs::write(
        etc.join("group"),
        format!("root:x:0:\ntty:x:5:\nusers:x:100:{name}\n{name}:x:{id}:\nnogroup:x:65534:\n"),
    )?;
    // Per-VM values are written by init at boot; these are placeholders.
    fs::write(etc.join("hostname"), "agentvm\n")?;
    fs::write(etc.join("hosts"), hosts_file("agentvm"))?;
    // A VM has loopback networking only: no name server is reachable.
    fs::write(etc.join("resolv.conf"), RESOLV_CONF_NONE)?;
    Ok(())
}

/// The `/etc/hosts` of a VM called `hostname`.
pub fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}

/// Copies `src` to `dst` without following symlinks, skipping anything not world-readable and
/// every path in [`EXCLUDED`].
fn copy_readable(src: &Path, dst: &Path, relative: &Path) -> io::Result<()> {
    if EXCLUDED.iter().any(|e| relative == Path::new(e)) {
        return Ok(());
    }
    let Ok(meta) = fs::symlink_metadata(src) else { return Ok(()) };
    let mode = meta.permissions().mode();
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        symlink(fs::read_link(src)?, dst)?;
    } else if file_type.is_file() {
        if mode & 0o004 == 0 {
            return Ok(());
        }
        fs::copy(src, dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(mode & 0o755))?;
    } else if file_type.is_dir() {
        if mode & 0o005 != 0o005 {
            return Ok(());
        }
        fs::create_dir(dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(mode & 0o755))?;
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            let name = entry.file_name();
            copy_readable(&entry.path(), &dst.join(&name), &relative.join(&name))?;
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> io::Result<()> {
    lchown(path, Some(uid), Some(gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), (uid, gid))?;
        }
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_has_identity_and_no_secrets() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        fs::create_dir_all(h.join("usr/bin")).unwrap();
        fs::create_dir_all(h.join("etc/ssl/private")).unwrap();
        fs::create_dir_all(h.join("etc/ssl/certs")).unwrap();
        fs::write(h.join("etc/ssl/private/key.pem"), "secret").unwrap();
        fs::write(h.join("etc/ssl/certs/ca.pem"), "public").unwrap();
        fs::write(h.join("etc/shadow"), "root:hash").unwrap();
        fs::write(h.join("etc/profile"), "umask 022").unwrap();
        fs::create_dir_all(h.join("etc/profile.d")).unwrap();
        fs::write(h.join("etc/profile.d/token.sh"), "export TOKEN=1").unwrap();
        fs::set_permissions(h.join("etc/profile.d/token.sh"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("usr/bin", h.join("bin")).unwrap();
        fs::create_dir(h.join("lib")).unwrap();

        let out = tempfile::tempdir().unwrap();
        let me = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        let base =
            build(&out.path().join("base"), &BaseOptions { host_root: h, owner: me, user_name: "user", user_id: 1000 })
                .unwrap();
        let etc = base.dir.join("etc");
        assert!(fs::read_to_string(etc.join("passwd")).unwrap().contains("user:x:1000:1000:user:/home/user:/bin/sh"));
        assert_eq!(fs::read_to_string(etc.join("profile")).unwrap(), "umask 022");
        assert_eq!(fs::read_to_string(etc.join("ssl/certs/ca.pem")).unwrap(), "public");
        assert!(!etc.join("ssl/private").exists());
        assert!(!etc.join("shadow").exists());
        assert!(!etc.join("profile.d/token.sh").exists(), "non-world-readable files are skipped");
        assert_eq!(fs::read_link(base.dir.join("bin")).unwrap(), PathBuf::from("usr/bin"));
        let targets: Vec<&str> = base.readonly_binds.iter().map(|b| b.target.as_str()).collect();
        assert_eq!(targets, ["/usr", "/lib"]);
        assert_eq!(fs::metadata(base.dir.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
    }
}

//! Finds the cgroup hierarchies and this process's place in them.

use std::fs;
use std::path::{Path, PathBuf};

use super::{v1, v2, CgroupHost};

struct Mount {
    root: String,
    mountpoint: PathBuf,
    fstype: String,
    super_options: Vec<String>,
}

pub(super) fn detect() -> Result<CgroupHost, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let membership = fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(parse_mount).collect();

    // `/proc/self/cgroup`: "id:controllers:path"; v2 is "0::path".
    let mut v1_paths: Vec<(Vec<String>, String)> = Vec::new();
    let mut v2_path: Option<String> = None;
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.is_empty() {
            v2_path = Some(path.to_string());
        } else {
            v1_paths.push((controllers.split(',').map(str::to_string).collect(), path.to_string()));
        }
    }

    let own_dir = |mount: &Mount, path: &str| -> Option<PathBuf> {
        // Inside a container the mount's root may be a sub-path of the hierarchy.
        let relative = if mount.root == "/" { path } else { path.strip_prefix(mount.root.as_str())? };
        let dir = mount.mountpoint.join(relative.trim_start_matches('/'));
        dir.is_dir().then_some(dir)
    };
    let v1_dir = |controller: &str| -> Option<PathBuf> {
        let mount = mounts.iter().find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))?;
        let (_, path) = v1_paths.iter().find(|(cs, _)| cs.iter().any(|c| c == controller))?;
        own_dir(mount, path)
    };
    let unified = mounts.iter().find(|m| m.fstype == "cgroup2").and_then(|m| own_dir(m, v2_path.as_deref()?));

    let hierarchies = v1::Hierarchies {
        memory: v1_dir("memory"),
        pids: v1_dir("pids"),
        cpu: v1_dir("cpu"),
        cpuset: v1_dir("cpuset"),
        cpuacct: v1_dir("cpuacct"),
        unified: unified.clone(),
    };
    let has_v1 = hierarchies.memory.is_some() || hierarchies.pids.is_some() || hierarchies.cpu.is_some();
    if has_v1 {
        return Ok(CgroupHost::V1(hierarchies));
    }
    match unified {
        Some(own) if Path::new(&own).join("cgroup.controllers").exists() => Ok(CgroupHost::V2(v2::Hierarchy { own })),
        _ => Err("no cgroup hierarchy found in /proc/self/mountinfo".into()),
    }
}

/// One line of `/proc/self/mountinfo`: `id parent major:minor root mountpoint options [optional...] - fstype source super_options`.
fn parse_mount(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    let mut rest = right.split(' ');
    let fstype = rest.next()?.to_string();
    let _source = rest.next()?;
    let super_options = rest.next().unwrap_or("").split(',').map(str::to_string).collect();
    Some(Mount {
        root: unescape(fields.get(3)?),
        mountpoint: PathBuf::from(unescape(fields.get(4)?)),
        fstype,
        super_options,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let m = parse_mount("35 25 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory").unwrap();
        assert_eq!(m.fstype, "cgroup");
        assert_eq!(m.mountpoint, PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(m.super_options.contains(&"memory".to_string()));
        let m = parse_mount("1 2 0:1 / /a\\040b rw shared:1 - cgroup2 cgroup2 rw").unwrap();
        assert_eq!(m.mountpoint, PathBuf::from("/a b"));
    }
}

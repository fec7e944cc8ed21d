//! A snapshot survives the trip: a directory with what VMs' files carry, archived, stored in a
//! local-directory store, read back and unpacked, comes out the same; the store's manifest
//! names the newest snapshot, old parts go, and removing an actor removes all of it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use agentvm_snapshot::{pack, unpack, Manifest, Part, SnapshotActor, SnapshotStore, FORMAT};

fn manifest(sequence: u64, bytes: u64) -> Manifest {
    Manifest {
        format: FORMAT,
        sequence,
        taken_ms: 1,
        host: "host-a".into(),
        generation: 1,
        point_in_time: true,
        actor: SnapshotActor {
            id: "actor1".into(),
            namespace: "default".into(),
            name: "vm".into(),
            key: "k".into(),
            created_ms: 1,
        },
        parts: vec![Part { name: "upper".into(), bytes }],
    }
}

/// What `ls -l`, `getfattr` and `stat` would say of every entry below `dir`.
fn describe(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let name = path.strip_prefix(dir).unwrap().display().to_string();
        let mut xattrs: Vec<String> = xattr_list(&path);
        xattrs.sort();
        let content = if meta.is_file() { std::fs::read(&path).unwrap().len() } else { 0 };
        let link = std::fs::read_link(&path).map(|l| l.display().to_string()).unwrap_or_default();
        out.push(format!(
            "{name} mode={:o} uid={} gid={} rdev={} size={content} link={link} xattrs={xattrs:?}",
            meta.permissions().mode(),
            meta.uid(),
            meta.gid(),
            meta.rdev()
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn xattr_list(path: &Path) -> Vec<String> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: a valid NUL-terminated path and a buffer of the given length.
    let len = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(len >= 0, "listxattr: {}", std::io::Error::last_os_error());
    names.truncate(len as usize);
    names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let c_name = std::ffi::CString::new(name).unwrap();
            let mut value = vec![0u8; 4096];
            // SAFETY: valid NUL-terminated strings and a buffer of the given length.
            let n =
                unsafe { libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
            value.truncate(n.max(0) as usize);
            format!("{}={}", String::from_utf8_lossy(name), String::from_utf8_lossy(&value))
        })
        .collect()
}

/// Files (not directories) below `dir`.
fn files_below(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                files_below(&path)
            } else {
                1
            }
        })
        .sum()
}

fn set_xattr(path: &Path, name: &str, value: &str) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let c_name = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe { libc::lsetxattr(c_path.as_ptr(), c_name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr {name}: {}", std::io::Error::last_os_error());
}

#[tokio::test]
async fn a_vm_directory_survives_the_store() {
    assert!(nix::unistd::geteuid().is_root(), "this test makes device nodes and foreign owners: run it as root");
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("upper");
    std::fs::create_dir_all(source.join("home/user/deep")).unwrap();
    std::fs::write(source.join("home/user/notes.txt"), b"hello").unwrap();
    std::fs::write(source.join("home/user/deep/blob"), vec![7u8; 300_000]).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", source.join("home/user/link")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", source.join("home/user/absolute")).unwrap();
    // Owners of a VM's id range, a setuid bit, an overlay whiteout and an opaque directory.
    std::os::unix::fs::chown(source.join("home/user/notes.txt"), Some(1_073_742_824), Some(1_073_742_824)).unwrap();
    std::fs::set_permissions(source.join("home/user/deep/blob"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    nix::sys::stat::mknod(
        &source.join("home/user/gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    set_xattr(&source.join("home/user/deep"), "trusted.overlay.opaque", "y");
    set_xattr(&source.join("home/user/notes.txt"), "user.note", "kept");

    let archive = work.path().join("upper.tar");
    let bytes = pack(&source, &archive).await.unwrap();
    assert!(bytes > 300_000);

    let store = SnapshotStore::open(work.path().join("store").to_str().unwrap()).unwrap();
    assert_eq!(store.latest("actor1").await.unwrap(), None);
    let first = manifest(1, bytes);
    store.put("actor1", &first, &[("upper", &archive)], None).await.unwrap();
    let second = manifest(2, bytes);
    store.put("actor1", &second, &[("upper", &archive)], Some(&first)).await.unwrap();
    assert_eq!(store.latest("actor1").await.unwrap(), Some(second.clone()));
    // The first snapshot's parts went once the second's manifest was written.
    assert!(store.part("actor1", &first, "upper").await.is_err());

    let target = work.path().join("restored");
    std::fs::create_dir_all(&target).unwrap();
    unpack(store.part("actor1", &second, "upper").await.unwrap(), &target).await.unwrap();
    let (restored, original) = (describe(&target), describe(&source));
    assert!(original.iter().any(|l| l.contains("trusted.overlay.opaque=y")), "{original:?}");
    assert_eq!(restored, original);

    store.remove("actor1").await.unwrap();
    assert_eq!(store.latest("actor1").await.unwrap(), None);
    assert_eq!(files_below(&work.path().join("store")), 0);
}

#[tokio::test]
async fn bad_locations_ids_and_archives_are_refused() {
    assert!(SnapshotStore::open("relative/dir").is_err());
    assert!(SnapshotStore::open("ftp://host/x").is_err());
    let work = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(&format!("file://{}", work.path().display())).unwrap();
    for bad in ["", "../x", "a/b", "a b"] {
        assert!(store.latest(bad).await.is_err(), "{bad:?}");
    }
    // Not a tar archive: the unpack fails with tar's message, nothing is left half-done silently.
    let garbage = futures_util::stream::iter(vec![Ok::<_, agentvm_snapshot::SnapshotError>(
        bytes::Bytes::from_static(b"not a tar file at all"),
    )]);
    let target = work.path().join("t");
    std::fs::create_dir_all(&target).unwrap();
    assert!(unpack(garbage, &target).await.is_err());
}

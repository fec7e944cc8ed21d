//! The VM filesystem API (`readFile`, `writeFile`, `mkdir`, `readdir`, `readdirRecursive`,
//! `stat`, `exists`, `move`, `delete`, `readFiles`, `writeFiles`), run inside the VM by
//! `agentvm vm-fs`: behaviour, error codes, and a battery of attempts to escape the VM's root.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentvm_vm::{EntryKind, SpawnOptions, Vm};
use common::*;

/// The error text of a failed call.
fn err<T: std::fmt::Debug>(result: agentvm_vm::Result<T>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => {
            assert!(matches!(e, agentvm_vm::VmError::FileSystem(_)), "not a FileSystem error: {e:?}");
            e.to_string()
        }
    }
}

/// Asserts `message` starts with `code` followed by `: `.
#[track_caller]
fn assert_code(message: &str, code: &str) {
    assert!(message.starts_with(&format!("{code}: ")), "expected {code}, got {message:?}");
}

#[tokio::test]
async fn binary_content_round_trips() {
    let h = host();
    let vm = h.vm("files-binary").await;
    let all: Vec<u8> = (0..=255u8).collect();
    vm.write_file("/home/user/bytes", &all).await.unwrap();
    assert_eq!(vm.read_file("/home/user/bytes").await.unwrap(), all);
    let hex: String = all.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sh(&vm, "od -An -tx1 -v /home/user/bytes | tr -d ' \\n'").await, hex);

    vm.write_file("/home/user/empty", b"").await.unwrap();
    assert_eq!(vm.read_file("/home/user/empty").await.unwrap(), b"");
    assert_eq!(sh(&vm, "wc -c < /home/user/empty").await.trim(), "0");

    let big: Vec<u8> = (0..10u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    vm.write_file("/tmp/big", &big).await.unwrap();
    let back = vm.read_file("/tmp/big").await.unwrap();
    assert!(back == big, "10 MiB round trip differs");
    assert_eq!(sh(&vm, "wc -c < /tmp/big").await.trim(), (10u32 << 20).to_string());

    // Overwriting with shorter content leaves nothing of the old content.
    vm.write_file("/home/user/bytes", b"xy").await.unwrap();
    assert_eq!(vm.read_file("/home/user/bytes").await.unwrap(), b"xy");
}

#[tokio::test]
async fn programs_and_the_api_see_the_same_files() {
    let h = host();
    let vm = h.vm("files-shared").await;
    sh(&vm, "echo x > /home/user/f").await;
    assert_eq!(vm.read_file("/home/user/f").await.unwrap(), b"x\n");
    vm.write_file("/home/user/g", b"from the api\n").await.unwrap();
    assert_eq!(sh(&vm, "cat /home/user/g; stat -c '%U %a' /home/user/g").await, "from the api\nuser 644\n");
    // vm-fs runs as the VM user, in the VM.
    let status = String::from_utf8(vm.read_file("/proc/self/status").await.unwrap()).unwrap();
    assert!(status.contains("\nUid:\t1000\t1000\t1000\t1000\n"), "{status}");
    assert!(status.contains("\nCapEff:\t0000000000000000\n"), "{status}");
    assert!(status.contains("\nNoNewPrivs:\t1\n"), "{status}");
}

#[tokio::test]
async fn read_file_errors() {
    let h = host();
    let vm = h.vm("files-read").await;
    assert_eq!(err(vm.read_file("/home/user/x").await), "ENOENT: no such file or directory, open '/home/user/x'");
    assert_eq!(err(vm.read_file("/home/user").await), "EISDIR: illegal operation on a directory, read '/home/user'");
    assert_eq!(err(vm.read_file("rel").await), "EINVAL: path must be absolute: 'rel'");
    sh(&vm, "echo s > /home/user/secret && chmod 000 /home/user/secret && touch /home/user/file").await;
    assert_code(&err(vm.read_file("/home/user/secret").await), "EACCES");
    assert_code(&err(vm.read_file("/home/user/file/x").await), "ENOTDIR");
    assert_eq!(vm.read_file("/dev/null").await.unwrap(), b"");
    // A FIFO without a writer reads as empty instead of blocking; an endless device is bounded.
    sh(&vm, "mkfifo /home/user/fifo").await;
    assert_eq!(vm.read_file("/home/user/fifo").await.unwrap(), b"");
    assert_code(&err(vm.read_file("/dev/zero").await), "EFBIG");
}

#[tokio::test]
async fn write_file_semantics() {
    let h = host();
    let vm = h.vm("files-write").await;
    assert_eq!(
        err(vm.write_file("/home/user/missing/f", b"x").await),
        "ENOENT: no such file or directory, open '/home/user/missing/f'"
    );
    assert_code(&err(vm.write_file("/home/user", b"x").await), "EISDIR");
    assert_code(&err(vm.write_file("/home/user/f/", b"x").await), "EISDIR");
    // An existing file keeps its mode; a new one gets 0644.
    sh(&vm, "echo old > /home/user/script && chmod 750 /home/user/script").await;
    vm.write_file("/home/user/script", b"#!/bin/sh\necho new\n").await.unwrap();
    assert_eq!(sh(&vm, "stat -c %a /home/user/script; /home/user/script").await, "750\nnew\n");
    assert_eq!(vm.stat("/home/user/script").await.unwrap().mode, 0o100750);
    // A symbolic link is followed (inside the VM) and its target written.
    sh(&vm, "ln -s target /home/user/link").await;
    vm.write_file("/home/user/link", b"through").await.unwrap();
    assert_eq!(sh(&vm, "cat /home/user/target; readlink /home/user/link").await, "throughtarget\n");
    // No temporary file is left behind.
    assert_eq!(vm.readdir("/home/user").await.unwrap(), ["link", "script", "target"]);
    // /proc (and /sys) are refused; read-only places fail as the kernel says.
    assert_eq!(err(vm.write_file("/proc/self/comm", b"x").await), "EACCES: permission denied, open '/proc/self/comm'");
    assert_code(&err(vm.write_file("/proc/x", b"x").await), "EACCES");
    assert_code(&err(vm.write_file("/sys/x", b"x").await), "EACCES");
    let usr = err(vm.write_file("/usr/agentvm-x", b"x").await);
    assert!(usr.starts_with("EACCES: ") || usr.starts_with("EROFS: "), "{usr}");
    assert_code(&err(vm.write_file("/etc/passwd", b"x").await), "EACCES");
    // A device the user may write is written in place, not replaced.
    vm.write_file("/dev/null", b"discarded").await.unwrap();
    assert_eq!(sh(&vm, "stat -c %F /dev/null").await, "character special file\n");
}

#[tokio::test]
async fn read_files_and_write_files_report_per_entry() {
    let h = host();
    let vm = h.vm("files-batch").await;
    let results = vm
        .write_files(vec![
            ("/home/user/a/b/c.txt".into(), b"abc".to_vec()),
            ("/tmp/t.bin".into(), vec![0, 1, 2]),
            ("relative".into(), b"x".to_vec()),
            ("/home/user/a/b/c.txt/under-a-file".into(), b"x".to_vec()),
            ("/proc/nope".into(), b"x".to_vec()),
        ])
        .await;
    let summary: Vec<(&str, bool)> = results.iter().map(|r| (r.path.as_str(), r.success)).collect();
    assert_eq!(
        summary,
        [
            ("/home/user/a/b/c.txt", true),
            ("/tmp/t.bin", true),
            ("relative", false),
            ("/home/user/a/b/c.txt/under-a-file", false),
            ("/proc/nope", false)
        ]
    );
    assert!(results[0].error.is_none());
    assert_code(results[2].error.as_deref().unwrap(), "EINVAL");
    assert_code(results[3].error.as_deref().unwrap(), "ENOTDIR");
    assert_code(results[4].error.as_deref().unwrap(), "EACCES");
    assert_eq!(sh(&vm, "cat /home/user/a/b/c.txt").await, "abc");

    let paths: Vec<String> =
        ["/home/user/a/b/c.txt", "/home/user/nope", "/tmp/t.bin", "/home/user/a"].map(String::from).to_vec();
    let read = vm.read_files(&paths).await;
    assert_eq!(read.len(), 4);
    assert_eq!((read[0].content.as_deref(), read[0].error.as_deref()), (Some(&b"abc"[..]), None));
    assert!(read[1].content.is_none());
    assert_eq!(read[1].error.as_deref(), Some("ENOENT: no such file or directory, open '/home/user/nope'"));
    assert_eq!(read[2].content.as_deref(), Some(&[0u8, 1, 2][..]));
    assert_code(read[3].error.as_deref().unwrap(), "EISDIR");
    assert!(vm.read_files(&[]).await.is_empty());
    assert!(vm.write_files(Vec::new()).await.is_empty());
}

#[tokio::test]
async fn mkdir_semantics() {
    let h = host();
    let vm = h.vm("files-mkdir").await;
    vm.mkdir("/home/user/d", false).await.unwrap();
    assert_eq!(err(vm.mkdir("/home/user/d", false).await), "EEXIST: file already exists, mkdir '/home/user/d'");
    assert_eq!(
        err(vm.mkdir("/home/user/x/y", false).await),
        "ENOENT: no such file or directory, mkdir '/home/user/x/y'"
    );
    vm.mkdir("/home/user/x/y/z", true).await.unwrap();
    vm.mkdir("/home/user/x/y/z", true).await.unwrap();
    vm.mkdir("/home/user/x/y/", true).await.unwrap();
    vm.mkdir("/home/user/x/./y/../w", true).await.unwrap();
    assert_eq!(sh(&vm, "cd /home/user && find x d | sort && stat -c %a x/y/z").await, "d\nx\nx/w\nx/y\nx/y/z\n755\n");
    sh(&vm, "touch /home/user/file").await;
    assert_code(&err(vm.mkdir("/home/user/file", true).await), "EEXIST");
    assert_code(&err(vm.mkdir("/home/user/file", false).await), "EEXIST");
    assert_code(&err(vm.mkdir("/home/user/file/sub", true).await), "ENOTDIR");
    assert_code(&err(vm.mkdir("/etc/not-writable-by-the-user", false).await), "EACCES");
    assert_code(&err(vm.mkdir("/", false).await), "EEXIST");
    vm.mkdir("/", true).await.unwrap();
    // Through a symbolic link to a directory, like `mkdir -p`.
    sh(&vm, "ln -s /tmp /home/user/tmplink").await;
    vm.mkdir("/home/user/tmplink/p/q", true).await.unwrap();
    assert_eq!(sh(&vm, "ls -d /tmp/p/q").await, "/tmp/p/q\n");
}

#[tokio::test]
async fn readdir_semantics() {
    let h = host();
    let vm = h.vm("files-readdir").await;
    sh(&vm, "cd /home/user && mkdir c && touch b a .hidden && ln -s /nowhere dangling").await;
    assert_eq!(vm.readdir("/home/user").await.unwrap(), [".hidden", "a", "b", "c", "dangling"]);
    assert_eq!(vm.readdir("/home/user/").await.unwrap().len(), 5);
    assert!(vm.readdir("/home/user/c").await.unwrap().is_empty());
    assert_eq!(
        err(vm.readdir("/home/user/nope").await),
        "ENOENT: no such file or directory, scandir '/home/user/nope'"
    );
    assert_eq!(err(vm.readdir("/home/user/a").await), "ENOTDIR: not a directory, scandir '/home/user/a'");
    let root = vm.readdir("/").await.unwrap();
    for name in ["etc", "home", "proc", "tmp", "usr"] {
        assert!(root.contains(&name.to_string()), "{root:?}");
    }
}

#[tokio::test]
async fn readdir_recursive_semantics() {
    let h = host();
    let vm = h.vm("files-walk").await;
    sh(
        &vm,
        "cd /home/user && mkdir -p t/a/b/c t/node_modules/pkg t/z && printf 12345 > t/a/f && touch t/a/b/c/deep \
         t/node_modules/pkg/i.js t/top && ln -s / t/root && ln -s ../.. t/a/up",
    )
    .await;
    let list = |entries: Vec<agentvm_vm::DirEntryInfo>| -> Vec<String> {
        entries.into_iter().map(|e| e.path.strip_prefix("/home/user/t/").unwrap().to_string()).collect()
    };
    let all = vm.readdir_recursive("/home/user/t", None, &[]).await.unwrap();
    assert_eq!(
        list(all.clone()),
        [
            "a",
            "node_modules",
            "root",
            "top",
            "z",
            "a/b",
            "a/f",
            "a/up",
            "node_modules/pkg",
            "a/b/c",
            "node_modules/pkg/i.js",
            "a/b/c/deep"
        ]
    );
    let kinds: BTreeMap<String, (EntryKind, u64)> =
        all.into_iter().map(|e| (e.path.clone(), (e.kind, e.size))).collect();
    assert_eq!(kinds["/home/user/t/a/f"], (EntryKind::File, 5));
    assert_eq!(kinds["/home/user/t/root"], (EntryKind::Symlink, 1));
    assert_eq!(kinds["/home/user/t/a"].0, EntryKind::Directory);
    assert_eq!(
        list(vm.readdir_recursive("/home/user/t", Some(0), &[]).await.unwrap()),
        ["a", "node_modules", "root", "top", "z"]
    );
    assert_eq!(
        list(vm.readdir_recursive("/home/user/t/", Some(1), &["node_modules".into(), "b".into()]).await.unwrap()),
        ["a", "root", "top", "z", "a/f", "a/up"]
    );
    let json = serde_json::to_value(vm.readdir_recursive("/home/user/t/a/b", None, &[]).await.unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"path": "/home/user/t/a/b/c", "type": "directory", "size": json[0]["size"]},
            {"path": "/home/user/t/a/b/c/deep", "type": "file", "size": 0}
        ])
    );
    assert_code(&err(vm.readdir_recursive("/home/user/none", None, &[]).await), "ENOENT");
    // A walk of the whole VM works (unreadable directories are listed, not entered).
    let everything = vm.readdir_recursive("/", Some(2), &["proc".into(), "sys".into(), "usr".into()]).await.unwrap();
    assert!(everything.iter().any(|e| e.path == "/home/user/t"));
}

#[tokio::test]
async fn readdir_recursive_is_bounded() {
    let h = host();
    let vm = h.vm("files-walk-limit").await;
    sh(&vm, "mkdir /tmp/many && cd /tmp/many && seq 1 100001 | xargs touch").await;
    assert_code(&err(vm.readdir_recursive("/tmp/many", None, &[]).await), "E2BIG");
    assert_eq!(vm.readdir("/tmp/many").await.unwrap().len(), 100_001);
}

#[tokio::test]
async fn stat_and_exists() {
    let h = host();
    let vm = h.vm("files-stat").await;
    sh(&vm, "cd /home/user && printf hello > f && mkdir d && ln -s d dlink && ln -s nowhere dangling").await;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as f64;
    let st = vm.stat("/home/user/f").await.unwrap();
    assert_eq!((st.mode, st.size, st.is_directory, st.is_symbolic_link), (0o100644, 5, false, false));
    assert_eq!((st.uid, st.gid, st.nlink), (1000, 1000, 1));
    assert!((st.mtime_ms - now_ms).abs() < 60_000.0, "mtime {} vs now {now_ms}", st.mtime_ms);
    assert!(st.ino > 0 && st.blocks > 0 && st.birthtime_ms > 0.0 && st.ctime_ms > 0.0 && st.atime_ms > 0.0);
    let json = serde_json::to_value(&st).unwrap();
    for key in [
        "mode",
        "size",
        "blocks",
        "dev",
        "rdev",
        "isDirectory",
        "isSymbolicLink",
        "atimeMs",
        "mtimeMs",
        "ctimeMs",
        "birthtimeMs",
        "ino",
        "nlink",
        "uid",
        "gid",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    let d = vm.stat("/home/user/d").await.unwrap();
    assert!(d.is_directory && !d.is_symbolic_link && d.mode & 0o170000 == 0o040000);
    let link = vm.stat("/home/user/dlink").await.unwrap();
    assert!(link.is_directory && link.is_symbolic_link && link.ino == d.ino);
    assert_eq!(
        err(vm.stat("/home/user/dangling").await),
        "ENOENT: no such file or directory, stat '/home/user/dangling'"
    );
    assert!(vm.stat("/").await.unwrap().is_directory);
    assert!(vm.stat("/dev/null").await.unwrap().rdev != 0);

    assert!(vm.exists("/home/user/f").await.unwrap());
    assert!(vm.exists("/home/user/dlink").await.unwrap());
    assert!(!vm.exists("/home/user/dangling").await.unwrap());
    assert!(!vm.exists("/home/user/nope").await.unwrap());
    assert!(!vm.exists("/home/user/f/under").await.unwrap());
    assert_eq!(err(vm.exists("home").await), "EINVAL: path must be absolute: 'home'");
}

#[tokio::test]
async fn move_semantics() {
    let h = host();
    let vm = h.vm("files-move").await;
    // Within one filesystem: a rename.
    sh(&vm, "cd /home/user && echo 1 > a && echo 2 > b && mkdir -p d/sub && echo in > d/sub/f && mkdir full && touch full/x").await;
    let ino = vm.stat("/home/user/a").await.unwrap().ino;
    vm.move_path("/home/user/a", "/home/user/a2").await.unwrap();
    assert_eq!(vm.stat("/home/user/a2").await.unwrap().ino, ino);
    vm.move_path("/home/user/a2", "/home/user/b").await.unwrap();
    assert_eq!(vm.read_file("/home/user/b").await.unwrap(), b"1\n");
    vm.move_path("/home/user/d", "/home/user/d2").await.unwrap();
    assert_eq!(vm.read_file("/home/user/d2/sub/f").await.unwrap(), b"in\n");
    assert_eq!(
        err(vm.move_path("/home/user/none", "/home/user/z").await),
        "ENOENT: no such file or directory, rename '/home/user/none' -> '/home/user/z'"
    );
    assert_code(&err(vm.move_path("/home/user/d2", "/home/user/full").await), "ENOTEMPTY");
    assert_code(&err(vm.move_path("/home/user/b", "/home/user/nodir/b").await), "ENOENT");
    assert_code(&err(vm.move_path("/", "/home/user/root").await), "EBUSY");

    // Across filesystems (the home directory is on the VM's disk, /tmp is a tmpfs): a copy
    // that keeps modes, times and symbolic links, then a delete.
    sh(
        &vm,
        "cd /home/user && mkdir -p tree/deep/er && printf data > tree/deep/er/file && chmod 751 tree/deep \
         && printf x > tree/exe && chmod 700 tree/exe && ln -s ../exe tree/deep/link && ln -s / tree/rootlink \
         && touch -d '2001-02-03 04:05:06' tree/exe && mkfifo tree/fifo",
    )
    .await;
    let before = sh(&vm, "cd /home/user/tree && find . | sort | xargs stat -c '%n %A %s %Y %N' ").await;
    vm.move_path("/home/user/tree", "/tmp/tree").await.unwrap();
    assert!(!vm.exists("/home/user/tree").await.unwrap());
    let after = sh(&vm, "cd /tmp/tree && find . | sort | xargs stat -c '%n %A %s %Y %N' ").await;
    let no_dir_times = |s: &str| -> Vec<String> { s.lines().filter(|l| !l.contains(" d")).map(String::from).collect() };
    assert_eq!(no_dir_times(&after), no_dir_times(&before));
    assert_eq!(sh(&vm, "stat -c %a /tmp/tree/deep; readlink /tmp/tree/rootlink").await, "751\n/\n");
    assert!(vm.readdir("/tmp").await.unwrap().iter().all(|n| !n.starts_with(".agentvm")));
    // And back, a single file and the tree.
    vm.move_path("/tmp/tree/deep/er/file", "/home/user/file").await.unwrap();
    assert_eq!(vm.read_file("/home/user/file").await.unwrap(), b"data");
    vm.move_path("/tmp/tree", "/home/user/tree-back").await.unwrap();
    assert_eq!(
        sh(&vm, "cd /home/user/tree-back && find . | sort").await,
        ".\n./deep\n./deep/er\n./deep/link\n./exe\n./fifo\n./rootlink\n"
    );
    assert!(!vm.exists("/tmp/tree").await.unwrap());
    // Across filesystems onto a non-empty directory: refused, the source is untouched.
    sh(&vm, "mkdir -p /tmp/busy && touch /tmp/busy/x").await;
    assert_code(&err(vm.move_path("/home/user/tree-back", "/tmp/busy").await), "ENOTEMPTY");
    assert!(vm.exists("/home/user/tree-back/exe").await.unwrap());
    assert_eq!(vm.readdir("/tmp").await.unwrap(), ["busy"]);
}

#[tokio::test]
async fn delete_semantics() {
    let h = host();
    let vm = h.vm("files-delete").await;
    sh(
        &vm,
        "cd /home/user && touch f && mkdir empty && mkdir -p full/a/b && touch full/a/b/x full/y && mkdir keep \
         && touch keep/precious && ln -s /home/user/keep full/link && ln -s /home/user/keep dirlink",
    )
    .await;
    vm.delete_path("/home/user/f", false).await.unwrap();
    vm.delete_path("/home/user/empty", false).await.unwrap();
    assert_eq!(
        err(vm.delete_path("/home/user/full", false).await),
        "ENOTEMPTY: directory not empty, rmdir '/home/user/full'"
    );
    vm.delete_path("/home/user/full", true).await.unwrap();
    // Links are removed, never followed.
    vm.delete_path("/home/user/dirlink", true).await.unwrap();
    assert_eq!(vm.readdir("/home/user").await.unwrap(), ["keep"]);
    assert_eq!(vm.readdir("/home/user/keep").await.unwrap(), ["precious"]);
    assert_eq!(
        err(vm.delete_path("/home/user/f", false).await),
        "ENOENT: no such file or directory, lstat '/home/user/f'"
    );
    assert_code(&err(vm.delete_path("/", true).await), "EBUSY");
    assert_code(&err(vm.delete_path("/home/user/..", true).await), "EINVAL");
    assert_code(&err(vm.delete_path("/etc/passwd", false).await), "EACCES");
    let usr = err(vm.delete_path("/usr", true).await);
    assert!(usr.starts_with("EACCES: ") || usr.starts_with("EROFS: "), "{usr}");
}

/// A host directory with a marker file, and what it held before the test.
struct HostMarker {
    dir: PathBuf,
    marker: PathBuf,
}

const MARKER: &str = "host marker: must stay out of reach\n";

impl HostMarker {
    fn new(base: &Path) -> HostMarker {
        let dir = base.join("host-secret");
        std::fs::create_dir(&dir).unwrap();
        let marker = dir.join("marker");
        std::fs::write(&marker, MARKER).unwrap();
        HostMarker { dir, marker }
    }

    fn marker_str(&self) -> &str {
        self.marker.to_str().unwrap()
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    #[track_caller]
    fn assert_untouched(&self) {
        assert_eq!(std::fs::read_to_string(&self.marker).unwrap(), MARKER);
        let names: Vec<_> = std::fs::read_dir(&self.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["marker"]);
    }
}

/// Host paths that must not appear whatever a VM does.
fn assert_no_host_file(name: &str, h: &TestHost) {
    for dir in ["/", "/tmp", "/usr", "/usr/bin", "/etc", "/root", "/home", "/var/tmp"] {
        let path = Path::new(dir).join(name);
        assert!(!path.exists() && path.symlink_metadata().is_err(), "{} was created on the host", path.display());
    }
    // Anywhere in the test's directory but inside VMs' own layers.
    let mut stack = vec![h.dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let inside_vm_layers =
                path.parent().and_then(|p| p.parent()).is_some_and(|p| p.ends_with("vms") || p.ends_with("disk"))
                    && (path.ends_with("upper") || path.ends_with("work"));
            assert!(entry.file_name() != name, "{} was created outside the VM", path.display());
            if entry.file_type().unwrap().is_dir() && !inside_vm_layers {
                stack.push(path);
            }
        }
    }
}

#[tokio::test]
async fn path_escape_battery() {
    let h = host();
    let m = HostMarker::new(h.dir.path());
    let vm = h.vm("files-escape").await;
    let marker = m.marker_str().to_string();
    let host_dir = m.dir_str().to_string();
    let data_dir = h.dir.path().join("data").to_str().unwrap().to_string();
    let vm_passwd = sh(&vm, "cat /etc/passwd").await;
    assert_ne!(vm_passwd.as_bytes(), std::fs::read("/etc/passwd").unwrap(), "the test needs distinct passwd files");
    sh(
        &vm,
        &format!(
            "cd /home/user && ln -s / l_root && ln -s /proc/1/root l_p1 && ln -s /proc/self/root l_self \
             && ln -s /proc/self/fd/3 l_fd3 && ln -s /proc/self/cwd l_cwd && ln -s '{host_dir}' l_host \
             && ln -s '{data_dir}' l_data && ln -s ../../../../../../../../.. l_up \
             && ln -s ../../../../../../../../..'{marker}' l_rel && ln -s loop_b loop_a && ln -s loop_a loop_b \
             && ln -s '{host_dir}/escape-dangling' dangling && ln -s /proc/self l_proc && ln -s /usr/bin l_usr \
             && ln -s /tmp/escape-new dangling_in_vm"
        ),
    )
    .await;
    let mut attempts = 0;
    let mut refused = |what: &str, message: String, codes: &[&str]| {
        attempts += 1;
        assert!(
            codes.iter().any(|c| message.starts_with(&format!("{c}: "))),
            "attempt {attempts} ({what}): expected one of {codes:?}, got {message:?}"
        );
        assert!(!message.contains(MARKER.trim()), "{what} leaked the marker");
    };

    // 1-2. `..` beyond the root stays at the VM's root.
    refused("../ traversal", err(vm.read_file("/../../etc/shadow").await), &["ENOENT"]);
    assert_eq!(vm.read_file("/home/user/../../../../../etc/passwd").await.unwrap(), vm_passwd.as_bytes());
    refused("../ to the host marker", err(vm.read_file(&format!("/../../..{marker}")).await), &["ENOENT"]);
    // 3. The host path itself means the VM's own (absent) file.
    refused("host path", err(vm.read_file(&marker).await), &["ENOENT"]);
    // 4. Through a symbolic link to /.
    refused("link to /", err(vm.read_file(&format!("/home/user/l_root{marker}")).await), &["ENOENT"]);
    assert_eq!(vm.read_file("/home/user/l_root/etc/passwd").await.unwrap(), vm_passwd.as_bytes());
    // 5-8. Magic links of /proc are refused.
    refused("/proc/1/root", err(vm.read_file("/home/user/l_p1/etc/passwd").await), &["ELOOP", "EACCES"]);
    refused("/proc/self/root", err(vm.read_file("/home/user/l_self/etc/passwd").await), &["ELOOP"]);
    refused("/proc/self/fd/3", err(vm.read_file("/home/user/l_fd3").await), &["ELOOP"]);
    refused("/proc/self/fd/3/..", err(vm.readdir("/home/user/l_fd3/").await), &["ELOOP"]);
    refused("/proc/self/cwd", err(vm.readdir("/home/user/l_cwd").await), &["ELOOP"]);
    refused("/proc/self/exe", err(vm.read_file("/proc/self/exe").await), &["ELOOP"]);
    refused("/dev/stdin", err(vm.read_file("/dev/stdin").await), &["ELOOP"]);
    refused("stat /proc/1/root", err(vm.stat("/proc/1/root/etc").await), &["ELOOP", "EACCES"]);
    // 9-10. Links to host paths resolve in the VM.
    refused("link to host dir", err(vm.read_file("/home/user/l_host/marker").await), &["ENOENT"]);
    refused("link to data dir", err(vm.readdir("/home/user/l_data").await), &["ENOENT"]);
    // 11-12. `..` chains in links.
    refused("relative climb", err(vm.read_file("/home/user/l_rel").await), &["ENOENT"]);
    refused("up chain", err(vm.read_file(&format!("/home/user/l_up{marker}")).await), &["ENOENT"]);
    assert_eq!(vm.read_file("/home/user/l_up/etc/passwd").await.unwrap(), vm_passwd.as_bytes());
    // 13. A loop.
    refused("loop", err(vm.read_file("/home/user/loop_a").await), &["ELOOP"]);
    refused("loop write", err(vm.write_file("/home/user/loop_a", b"x").await), &["ELOOP"]);
    // 14. Writing through a dangling link to a host path creates nothing anywhere.
    refused("dangling write", err(vm.write_file("/home/user/dangling", b"x").await), &["ENOENT"]);
    // ... and one pointing inside the VM writes inside the VM.
    vm.write_file("/home/user/dangling_in_vm", b"inside").await.unwrap();
    assert_eq!(sh(&vm, "cat /tmp/escape-new").await, "inside");
    // 15-17. Writes through a parent linked to /proc or /usr, and straight into /proc.
    refused("write via /proc link", err(vm.write_file("/home/user/l_proc/comm", b"x").await), &["EACCES"]);
    refused("write via /usr link", err(vm.write_file("/home/user/l_usr/escape", b"x").await), &["EACCES", "EROFS"]);
    refused("write /proc/1/root", err(vm.write_file("/proc/1/root/escape", b"x").await), &["ELOOP", "EACCES"]);
    // 18. Writing to the host marker's path: its parent does not exist in the VM.
    refused("write host path", err(vm.write_file(&marker, b"owned").await), &["ENOENT"]);
    refused("write via link", err(vm.write_file("/home/user/l_host/marker", b"owned").await), &["ENOENT"]);
    // 19-22. Invalid paths.
    refused("NUL", err(vm.read_file("/home/user/a\0/etc/passwd").await), &["EINVAL"]);
    refused("NUL write", err(vm.write_file("/tmp/a\0b", b"x").await), &["EINVAL"]);
    refused("relative", err(vm.read_file("etc/passwd").await), &["EINVAL"]);
    refused("relative dots", err(vm.write_file("../escape", b"x").await), &["EINVAL"]);
    refused("empty", err(vm.read_file("").await), &["EINVAL"]);
    refused("long path", err(vm.read_file(&format!("/{}", "a/".repeat(3000))).await), &["ENAMETOOLONG"]);
    refused("long name", err(vm.write_file(&format!("/tmp/{}", "n".repeat(300)), b"x").await), &["ENAMETOOLONG"]);
    // 23-26. Other operations on host paths or through links.
    refused("move host file", err(vm.move_path(&marker, "/home/user/stolen").await), &["ENOENT"]);
    refused("move via link", err(vm.move_path("/home/user/l_host/marker", "/tmp/stolen").await), &["ENOENT"]);
    refused("delete host dir", err(vm.delete_path(&host_dir, true).await), &["ENOENT"]);
    refused("delete via link", err(vm.delete_path("/home/user/l_host/marker", false).await), &["ENOENT"]);
    refused("stat host file", err(vm.stat(&marker).await), &["ENOENT"]);
    assert!(!vm.exists(&marker).await.unwrap());
    assert!(!vm.exists("/home/user/l_p1/etc").await.unwrap());
    // 27. The same path string, created inside the VM, is a different file.
    vm.mkdir(&host_dir, true).await.unwrap();
    vm.write_file(&marker, b"the VM's own file").await.unwrap();
    assert_eq!(vm.read_file(&marker).await.unwrap(), b"the VM's own file");
    vm.move_path(&marker, "/home/user/moved").await.unwrap();
    vm.delete_path(&host_dir, true).await.unwrap();
    // 28. Walks and deletes never follow links.
    let walk = vm.readdir_recursive("/home/user", None, &[]).await.unwrap();
    assert!(walk.iter().all(|e| e.path.matches('/').count() == 3), "a link was followed: {walk:?}");
    vm.delete_path("/home/user/l_root", true).await.unwrap();
    vm.delete_path("/home/user/l_host", true).await.unwrap();
    assert!(vm.exists("/etc/passwd").await.unwrap());
    // 29. Moving a link across filesystems re-creates the link, never what it points to.
    vm.move_path("/home/user/l_up", "/tmp/l_up").await.unwrap();
    assert_eq!(sh(&vm, "readlink /tmp/l_up").await, "../../../../../../../../..\n");

    assert!(attempts >= 20, "only {attempts} attempts");
    m.assert_untouched();
    assert_no_host_file("escape", &h);
    assert_no_host_file("escape-dangling", &h);
    assert_no_host_file("stolen", &h);
    assert!(!Path::new("/tmp/escape-new").exists());
}

#[tokio::test]
async fn racing_a_directory_swapped_with_a_link_to_root() {
    let h = host();
    let m = HostMarker::new(h.dir.path());
    let vm = h.vm("files-race").await;
    sh(&vm, "mkdir /home/user/d").await;
    let swap = "cd /home/user && while :; do mv d d2; ln -s / d; rm d; mv d2 d; done";
    let pid = vm.spawn("sh", &["-c".into(), swap.into()], SpawnOptions::default()).await.unwrap();
    let through_link = format!("/home/user/d{}", m.marker_str());
    let (mut written, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut rounds = 0;
    while rounds < 300 && Instant::now() < deadline {
        rounds += 1;
        match vm.write_file("/home/user/d/escape", b"race").await {
            Ok(()) => written += 1,
            Err(e) => {
                let text = e.to_string();
                assert!(["ENOENT", "EACCES", "ENOTDIR"].iter().any(|c| text.starts_with(c)), "{text}");
                refused += 1;
            }
        }
        if let Ok(content) = vm.read_file(&through_link).await {
            panic!("read the host marker through the race: {content:?}");
        }
    }
    vm.kill_process(pid).unwrap();
    vm.wait_process(pid).await.unwrap();
    eprintln!("race: {rounds} rounds, {written} writes landed in the VM's /home/user/d, {refused} refused");
    assert!(written > 0, "no write succeeded: the race test proves nothing");
    // The loop may have been killed in any state: put the real directory back.
    sh(&vm, "cd /home/user && if [ -L d ]; then rm d; fi && if [ ! -e d ]; then mv d2 d; fi").await;
    assert_eq!(sh(&vm, "cat /home/user/d/escape; ls -a /home/user/d").await, "race.\n..\nescape\n");
    assert!(run(&vm, "test -e /escape").await.exit_code != 0, "the VM's root got the file");
    m.assert_untouched();
    assert_no_host_file("escape", &h);
}

#[tokio::test]
async fn small_file_timings() {
    let h = host();
    let vm = h.vm("files-timing").await;
    vm.write_file("/home/user/warm", b"warm").await.unwrap();
    let rounds = 50;
    let started = Instant::now();
    for i in 0..rounds {
        vm.write_file("/home/user/small", format!("content {i}").as_bytes()).await.unwrap();
    }
    let write = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        vm.read_file("/home/user/small").await.unwrap();
    }
    let read = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        sh(&vm, "true").await;
    }
    let exec = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        vm.exists("/home/user/small").await.unwrap();
    }
    let exists = started.elapsed() / rounds;
    eprintln!(
        "timings (mean of {rounds}): write_file {write:?}, read_file {read:?}, exists {exists:?}, exec(true) {exec:?}"
    );
}

/// A VM handle is usable for files from many tasks at once.
#[tokio::test]
async fn concurrent_calls() {
    let h = host();
    let vm: Vm = h.vm("files-concurrent").await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let vm = vm.clone();
            tokio::spawn(async move {
                let path = format!("/home/user/c{i}");
                vm.write_file(&path, path.as_bytes()).await.unwrap();
                assert_eq!(vm.read_file(&path).await.unwrap(), path.as_bytes());
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(vm.readdir("/home/user").await.unwrap().len(), 16);
}

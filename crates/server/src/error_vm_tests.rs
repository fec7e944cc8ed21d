//! Every [`VmError`] kind as clients receive it: status, group, code, message and metadata.
//! The texts are the ones clients already match on (see `crates/agentvm/tests/files.rs`,
//! `spawn.rs`, `server_http.rs`); the code and `metadata.code` come from the error's data.

use super::*;
use agentvm_vm::{FileError, FsError, SpawnError};

type Rendered = (u16, &'static str, &'static str, String, Option<Value>);

fn render(e: VmError) -> Rendered {
    let api = ApiError::from(e);
    (api.status.as_u16(), api.group, api.code, api.message, api.metadata)
}

fn plain(status: u16, code: &'static str, message: &str) -> Rendered {
    (status, "vm", code, message.to_string(), None)
}

fn fs(status: u16, message: &str, code: &str) -> Rendered {
    (status, "vm", "fs_error", message.to_string(), Some(Value::object([("code", Value::from(code.to_string()))])))
}

fn syscall(errno: Errno, syscall: &str, path: &str) -> VmError {
    VmError::from(FsError::Syscall { errno: errno as i32, syscall: syscall.into(), path: path.into() })
}

#[test]
fn process_not_found() {
    assert_eq!(render(VmError::ProcessNotFound(42)), plain(404, "process_not_found", "Process not found: 42"));
}

#[test]
fn shell_not_found() {
    assert_eq!(
        render(VmError::ShellNotFound("shell-9".into())),
        plain(404, "shell_not_found", "Shell not found: shell-9")
    );
}

/// One case per kind of spawn failure.
#[test]
fn spawn_failed() {
    let cases = [
        (SpawnError::NotFound { program: "nope".into() }, "ENOENT: command not found: nope"),
        (
            SpawnError::Chdir { errno: Errno::ENOENT as i32, cwd: "/nonexistent".into() },
            "ENOENT: No such file or directory, chdir '/nonexistent'",
        ),
        (
            SpawnError::Exec { errno: Errno::EACCES as i32, program: "/etc".into() },
            "EACCES: Permission denied, exec '/etc'",
        ),
        (SpawnError::Identity { errno: Errno::EPERM as i32 }, "EPERM: Operation not permitted, dropping privileges"),
        (SpawnError::Stdio { errno: Errno::EBADF as i32 }, "EBADF: Bad file number, setting up stdio"),
        (SpawnError::Pipe { errno: Errno::EMFILE as i32 }, "EMFILE: Too many open files, pipe"),
        (SpawnError::Fork { errno: Errno::EAGAIN as i32 }, "EAGAIN: Try again, fork"),
        (
            SpawnError::Terminal { errno: Errno::ENOSPC as i32, step: "opening /dev/ptmx".into() },
            "ENOSPC: No space left on device, opening /dev/ptmx",
        ),
        (SpawnError::StdioCount { expected: 3, got: 1 }, "EINVAL: expected 3 stdio descriptors, got 1"),
        (SpawnError::EmptyCommand, "EINVAL: empty command"),
        (SpawnError::NulByte { what: "an argument".into() }, "EINVAL: an argument contains a NUL byte"),
        (SpawnError::NoTerminal, "init sent no terminal"),
    ];
    for (error, text) in cases {
        assert_eq!(render(VmError::SpawnFailed(error)), plain(400, "spawn_failed", text));
    }
}

#[test]
fn invalid_argument() {
    assert_eq!(
        render(VmError::InvalidArgument("cwd must be an absolute path: rel".into())),
        plain(400, "invalid_argument", "cwd must be an absolute path: rel")
    );
}

#[test]
fn invalid_state() {
    assert_eq!(
        render(VmError::InvalidState("stdin of process 7 is closed".into())),
        plain(409, "invalid_state", "stdin of process 7 is closed")
    );
}

#[test]
fn create_failed() {
    assert_eq!(
        render(VmError::CreateFailed { vm: "vm1".into(), message: "init exited with code 3".into() }),
        plain(500, "boot_failed", "creating VM vm1: init exited with code 3")
    );
}

#[test]
fn stopped() {
    assert_eq!(render(VmError::Stopped("vm1".into())), plain(503, "not_running", "VM vm1 is not running"));
}

#[test]
fn resource_exhausted() {
    assert_eq!(
        render(VmError::ResourceExhausted("no terminals left".into())),
        plain(503, "resource_exhausted", "no terminals left")
    );
}

#[test]
fn io() {
    let e = VmError::Io { context: "creating a pipe".into(), source: std::io::Error::from_raw_os_error(24) };
    assert_eq!(render(e), plain(500, "io_error", "creating a pipe: Too many open files (os error 24)"));
}

/// A missing path is a 404; every other file system error a 400. One case per errno family.
#[test]
fn file_system_operation_errors() {
    let cases = [
        (syscall(Errno::ENOENT, "open", "/home/user/x"), fs(404, "ENOENT: no such file or directory, open '/home/user/x'", "ENOENT")),
        (syscall(Errno::EISDIR, "open", "/home"), fs(400, "EISDIR: illegal operation on a directory, open '/home'", "EISDIR")),
        (syscall(Errno::ENOTDIR, "scandir", "/f"), fs(400, "ENOTDIR: not a directory, scandir '/f'", "ENOTDIR")),
        (syscall(Errno::ENOTEMPTY, "rmdir", "/d"), fs(400, "ENOTEMPTY: directory not empty, rmdir '/d'", "ENOTEMPTY")),
        (syscall(Errno::EEXIST, "mkdir", "/d"), fs(400, "EEXIST: file already exists, mkdir '/d'", "EEXIST")),
        (syscall(Errno::EACCES, "open", "/proc/x"), fs(400, "EACCES: permission denied, open '/proc/x'", "EACCES")),
        (syscall(Errno::EDQUOT, "open", "/big"), fs(400, "EDQUOT: disk quota exceeded, open '/big'", "EDQUOT")),
        (syscall(Errno::ESPIPE, "read", "/p"), fs(400, "ESPIPE: illegal seek, read '/p'", "ESPIPE")),
        (
            VmError::from(FsError::NotAbsolute { path: "rel".into() }),
            fs(400, "EINVAL: path must be absolute: 'rel'", "EINVAL"),
        ),
        (
            VmError::from(FsError::ListingTooLarge { entries: 100_000, mib: 64, path: "/".into() }),
            fs(
                400,
                "E2BIG: listing too large (over 100000 entries or 64 MiB of paths; use maxDepth or exclude), scandir '/'",
                "E2BIG",
            ),
        ),
        (
            VmError::from(FsError::SourceNotRemoved {
                source: Box::new(FsError::Syscall { errno: Errno::EACCES as i32, syscall: "rename".into(), path: "/a".into() }),
            }),
            fs(400, "EACCES: permission denied, rename '/a' (the destination is complete; the source could not be removed)", "EACCES"),
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(render(error), expected);
    }
}

/// Failures of the VM's file helper itself.
#[test]
fn file_helper_errors() {
    assert_eq!(
        render(VmError::from(FileError::HelperFailed { exit_code: 1, stderr: "agentvm vm-fs: boom".into() })),
        fs(400, "EIO: the VM's file helper failed (exit code 1): agentvm vm-fs: boom", "EIO")
    );
    assert_eq!(
        render(VmError::from(FileError::HelperAnswer("no reply".into()))),
        fs(400, "EIO: unexpected answer from the VM's file helper: no reply", "EIO")
    );
    assert_eq!(
        render(VmError::from(FileError::Request("frame header too large".into()))),
        fs(400, "EINVAL: frame header too large", "EINVAL")
    );
}

//! Error texts in Node's style: `CODE: description, syscall 'path'`, e.g.
//! `ENOENT: no such file or directory, open '/home/user/x'`. Clients match on the leading code.

use nix::errno::Errno;

/// An operation's failure, as sent to the host.
pub type FsError = String;
pub type FsResult<T> = Result<T, FsError>;

/// `CODE: description, syscall 'path'`.
pub fn fs_error(errno: Errno, syscall: &str, path: &str) -> FsError {
    format!("{}: {}, {syscall} '{path}'", code(errno), description(errno))
}

/// The symbolic name of an error number (`ENOENT`).
pub fn code(errno: Errno) -> String {
    format!("{errno:?}")
}

/// The description Node (libuv) uses for the common codes; the C library's otherwise.
pub fn description(errno: Errno) -> String {
    let text = match errno {
        Errno::ENOENT => "no such file or directory",
        Errno::EISDIR => "illegal operation on a directory",
        Errno::ENOTDIR => "not a directory",
        Errno::ENOTEMPTY => "directory not empty",
        Errno::EEXIST => "file already exists",
        Errno::EACCES => "permission denied",
        Errno::EPERM => "operation not permitted",
        Errno::EINVAL => "invalid argument",
        Errno::ELOOP => "too many symbolic links encountered",
        Errno::ENAMETOOLONG => "name too long",
        Errno::EXDEV => "cross-device link not permitted",
        Errno::EROFS => "read-only file system",
        Errno::EBUSY => "resource busy or locked",
        Errno::ENOSPC => "no space left on device",
        Errno::EDQUOT => "disk quota exceeded",
        Errno::EFBIG => "file too large",
        Errno::EMFILE => "too many open files",
        Errno::EIO => "i/o error",
        Errno::EAGAIN => "resource temporarily unavailable",
        Errno::ENOSYS => "function not implemented",
        Errno::E2BIG => "argument list too long",
        other => return other.desc().to_lowercase(),
    };
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_style() {
        assert_eq!(fs_error(Errno::ENOENT, "open", "/x"), "ENOENT: no such file or directory, open '/x'");
        assert_eq!(fs_error(Errno::ENOTEMPTY, "rmdir", "/d"), "ENOTEMPTY: directory not empty, rmdir '/d'");
        assert!(fs_error(Errno::ESPIPE, "read", "/p").starts_with("ESPIPE: "));
    }
}

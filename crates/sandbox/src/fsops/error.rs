//! Why a file operation failed, as data: the error number, the system call and the path (or,
//! for the few failures that are not a system call's, what was wrong). Replies carry it in this
//! form ([`super::wire::Reply`]); nothing parses its text back.
//!
//! Its `Display` is the one place the client-facing text is made, in Node's style
//! `CODE: description, syscall 'path'` (`ENOENT: no such file or directory, open '/home/user/x'`);
//! the API layer shows that text and sends [`FsError::code`] as `metadata.code`.

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

/// An operation's failure, as sent to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FsError {
    /// A system call on `path` failed with `errno`.
    #[error("{}: {}, {syscall} '{path}'", code(Errno::from_raw(*errno)), description(Errno::from_raw(*errno)))]
    Syscall { errno: i32, syscall: String, path: String },
    /// An I/O failure that came without an error number (`EIO`).
    #[error("EIO: {detail}, {syscall} '{path}'")]
    Io { detail: String, syscall: String, path: String },
    /// A client path that is not absolute (`EINVAL`).
    #[error("EINVAL: path must be absolute: '{path}'")]
    NotAbsolute { path: String },
    /// A client path with a NUL byte, shown as `\0` (`EINVAL`).
    #[error("EINVAL: path must not contain NUL bytes: '{path}'")]
    NulByte { path: String },
    /// A request frame that does not decode (`EINVAL`).
    #[error("EINVAL: malformed request: {detail}")]
    MalformedRequest { detail: String },
    /// A recursive listing over its limits (`E2BIG`): at most `entries` entries and `mib` MiB
    /// of paths.
    #[error(
        "E2BIG: listing too large (over {entries} entries or {mib} MiB of paths; use maxDepth or exclude), \
         scandir '{path}'"
    )]
    ListingTooLarge { entries: usize, mib: usize, path: String },
    /// A move across filesystems copied everything but could not remove the source; the
    /// removal's own failure is the source of this one (and gives the code).
    #[error("{source} (the destination is complete; the source could not be removed)")]
    SourceNotRemoved {
        #[source]
        source: Box<FsError>,
    },
    /// A listing that could not be encoded for the reply (`EIO`).
    #[error("EIO: encoding a listing: {detail}")]
    Encoding { detail: String },
}

pub type FsResult<T> = Result<T, FsError>;

/// A failed system call on `path`.
pub fn fs_error(errno: Errno, syscall: &str, path: &str) -> FsError {
    FsError::Syscall { errno: errno as i32, syscall: syscall.to_string(), path: path.to_string() }
}

impl FsError {
    /// The error number this failure stands for.
    pub fn errno(&self) -> Errno {
        match self {
            FsError::Syscall { errno, .. } => Errno::from_raw(*errno),
            FsError::Io { .. } | FsError::Encoding { .. } => Errno::EIO,
            FsError::ListingTooLarge { .. } => Errno::E2BIG,
            FsError::SourceNotRemoved { source } => source.errno(),
            FsError::NotAbsolute { .. } | FsError::NulByte { .. } | FsError::MalformedRequest { .. } => Errno::EINVAL,
        }
    }

    /// The symbolic name of [`FsError::errno`] (`ENOENT`): what clients match on.
    pub fn code(&self) -> String {
        code(self.errno())
    }
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

    /// Every kind's rendered text and code, and one syscall failure per errno family Node
    /// names (plus one it does not, described by the C library).
    #[test]
    fn rendered_forms() {
        let cases: Vec<(FsError, &str, &str)> = vec![
            (fs_error(Errno::ENOENT, "open", "/x"), "ENOENT: no such file or directory, open '/x'", "ENOENT"),
            (fs_error(Errno::EISDIR, "read", "/d"), "EISDIR: illegal operation on a directory, read '/d'", "EISDIR"),
            (fs_error(Errno::ENOTDIR, "open", "/f/x"), "ENOTDIR: not a directory, open '/f/x'", "ENOTDIR"),
            (fs_error(Errno::ENOTEMPTY, "rmdir", "/d"), "ENOTEMPTY: directory not empty, rmdir '/d'", "ENOTEMPTY"),
            (fs_error(Errno::EEXIST, "mkdir", "/d"), "EEXIST: file already exists, mkdir '/d'", "EEXIST"),
            (fs_error(Errno::EACCES, "open", "/proc/x"), "EACCES: permission denied, open '/proc/x'", "EACCES"),
            (fs_error(Errno::EPERM, "unlink", "/x"), "EPERM: operation not permitted, unlink '/x'", "EPERM"),
            (fs_error(Errno::ELOOP, "open", "/l"), "ELOOP: too many symbolic links encountered, open '/l'", "ELOOP"),
            (fs_error(Errno::ENAMETOOLONG, "open", "/a"), "ENAMETOOLONG: name too long, open '/a'", "ENAMETOOLONG"),
            (fs_error(Errno::EDQUOT, "open", "/big"), "EDQUOT: disk quota exceeded, open '/big'", "EDQUOT"),
            (fs_error(Errno::EFBIG, "read", "/big"), "EFBIG: file too large, read '/big'", "EFBIG"),
            (fs_error(Errno::E2BIG, "scandir", "/d"), "E2BIG: argument list too long, scandir '/d'", "E2BIG"),
            (fs_error(Errno::ESPIPE, "read", "/p"), "ESPIPE: illegal seek, read '/p'", "ESPIPE"),
            (
                FsError::Io {
                    detail: "stream did not contain valid UTF-8".into(),
                    syscall: "read".into(),
                    path: "/x".into(),
                },
                "EIO: stream did not contain valid UTF-8, read '/x'",
                "EIO",
            ),
            (FsError::NotAbsolute { path: "rel".into() }, "EINVAL: path must be absolute: 'rel'", "EINVAL"),
            (FsError::NulByte { path: "/a\\0b".into() }, "EINVAL: path must not contain NUL bytes: '/a\\0b'", "EINVAL"),
            (
                FsError::MalformedRequest { detail: "truncated payload".into() },
                "EINVAL: malformed request: truncated payload",
                "EINVAL",
            ),
            (FsError::Encoding { detail: "boom".into() }, "EIO: encoding a listing: boom", "EIO"),
            (
                FsError::ListingTooLarge { entries: 100_000, mib: 64, path: "/d".into() },
                "E2BIG: listing too large (over 100000 entries or 64 MiB of paths; use maxDepth or exclude), \
                 scandir '/d'",
                "E2BIG",
            ),
            (
                FsError::SourceNotRemoved { source: Box::new(fs_error(Errno::EACCES, "rename", "/a -> /b")) },
                "EACCES: permission denied, rename '/a -> /b' (the destination is complete; the source could not \
                 be removed)",
                "EACCES",
            ),
        ];
        for (error, text, code) in cases {
            assert_eq!(error.to_string(), text);
            assert_eq!(error.code(), code, "{text}");
        }
    }

    /// On the wire a failure is data (errno, syscall, path), not text.
    #[test]
    fn travels_as_data() {
        let json = serde_json::to_string(&fs_error(Errno::ENOENT, "open", "/x")).unwrap();
        assert_eq!(json, r#"{"kind":"syscall","errno":2,"syscall":"open","path":"/x"}"#);
        let back: FsError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, fs_error(Errno::ENOENT, "open", "/x"));
    }
}

//! The filesystem API: what `stat`, `readdirRecursive`, `readFiles` and `writeFiles` return.

use serde::{Deserialize, Serialize};

/// What `stat` reports: the reference product's `VirtualStat` (Node's `fs.Stats` fields). Times
/// are milliseconds since the Unix epoch (with a fractional part), like Node's `*Ms` fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStat {
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    pub size: u64,
    /// 512-byte blocks allocated.
    #[serde(default)]
    pub blocks: u64,
    #[serde(default)]
    pub dev: u64,
    #[serde(default)]
    pub rdev: u64,
    pub is_directory: bool,
    /// Whether the path's final component is itself a symbolic link (`lstat`); every other
    /// field describes what it points to (`stat`).
    pub is_symbolic_link: bool,
    #[serde(default)]
    pub atime_ms: f64,
    pub mtime_ms: f64,
    #[serde(default)]
    pub ctime_ms: f64,
    /// Creation time where the filesystem records one, else the change time.
    #[serde(default)]
    pub birthtime_ms: f64,
    #[serde(default)]
    pub ino: u64,
    #[serde(default)]
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
}

/// Kind of a directory entry in `readdirRecursive`. Anything that is neither a directory nor a
/// symbolic link (devices, pipes, sockets) is reported as a file, as the reference product does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

impl EntryKind {
    /// The name on the wire: `file`, `directory` or `symlink`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
        }
    }
}

/// One entry of `readdirRecursive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntryInfo {
    /// Absolute path in the VM.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Size in bytes (`lstat`: a symbolic link's size is the length of its target).
    pub size: u64,
}

/// One entry of `readFiles`: the content, or why it could not be read (the error's text, as
/// the single-file call would report it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileResult {
    pub path: String,
    pub content: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One entry of `writeFiles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileResult {
    pub path: String,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_kinds_on_the_wire() {
        for kind in [EntryKind::File, EntryKind::Directory, EntryKind::Symlink] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let entry: DirEntryInfo = serde_json::from_str(r#"{"path":"/g","type":"file","size":6}"#).unwrap();
        assert_eq!(entry, DirEntryInfo { path: "/g".into(), kind: EntryKind::File, size: 6 });
    }

    #[test]
    fn stats_decode_with_only_the_required_fields() {
        let json =
            r#"{"mode":33188,"size":3,"isDirectory":false,"isSymbolicLink":false,"mtimeMs":1.5,"uid":1000,"gid":1000}"#;
        let stat: FileStat = serde_json::from_str(json).unwrap();
        assert_eq!((stat.mode, stat.size, stat.mtime_ms, stat.blocks), (33188, 3, 1.5, 0));
    }
}

//! A directory to one archive file and back.
//!
//! Written around GNU tar rather than a Rust tar crate: a VM's files carry what the Rust crates
//! do not write back faithfully — extended attributes in every namespace (`trusted.overlay.*`
//! marks opaque directories of the overlay's upper layer, `security.capability` file
//! capabilities), overlayfs whiteouts (character devices 0:0), numeric owners from the VM's id
//! range, sparse files — and GNU tar (on every Debian system) does, as root, with
//! `--xattrs --xattrs-include=*`, `--numeric-owner` and `--sparse`. On extraction GNU tar
//! refuses members that climb out of the target (`..`, absolute names) and creates symbolic
//! links that point outside it only after every other member is written.

use std::path::Path;
use std::process::Stdio;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{io, SnapshotError};

const TAR: &str = "tar";

/// What every archive keeps of a file.
const KEEP: &[&str] = &["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"];

/// Archives the contents of `dir` into the file `out` (replaced); returns its size. A file that
/// changed while it was read (a live directory) is archived as read, with a warning.
pub async fn pack(dir: &Path, out: &Path) -> Result<u64, SnapshotError> {
    let context = format!("archiving {}", dir.display());
    let output = tokio::process::Command::new(TAR)
        .arg("--create")
        .arg("--file")
        .arg(out)
        .arg("--directory")
        .arg(dir)
        .args(KEEP)
        .args(["--sparse", "--one-file-system", "--format=posix", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(io(format!("{context}: starting {TAR}")))?;
    // GNU tar exits with 1 when a file changed as it read it: the archive is complete.
    match output.status.code() {
        Some(0) => {}
        Some(1) => {
            tracing::warn!(dir = %dir.display(), "files changed while they were archived: {}", String::from_utf8_lossy(&output.stderr).trim())
        }
        _ => {
            return Err(SnapshotError::Archiver {
                context,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }
    let size = tokio::fs::metadata(out).await.map_err(io(format!("{context}: reading {}", out.display())))?.len();
    Ok(size)
}

/// Extracts an archive [`pack`] made, read from `archive`, into `dir` (which must exist), with
/// owners, modes and extended attributes as archived.
pub async fn unpack<S, E>(mut archive: S, dir: &Path) -> Result<(), SnapshotError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<SnapshotError>,
{
    let context = format!("restoring into {}", dir.display());
    let mut child = tokio::process::Command::new(TAR)
        .arg("--extract")
        .args(["--file", "-"])
        .arg("--directory")
        .arg(dir)
        .args(KEEP)
        .args(["--same-permissions", "--same-owner"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(io(format!("{context}: starting {TAR}")))?;
    let mut stdin = child.stdin.take().ok_or_else(|| io(context.clone())(std::io::Error::other("no stdin")))?;
    let mut stderr = child.stderr.take().ok_or_else(|| io(context.clone())(std::io::Error::other("no stderr")))?;
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut fed: Result<(), SnapshotError> = Ok(());
    while let Some(chunk) = archive.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                fed = Err(e.into());
                break;
            }
        };
        if let Err(e) = stdin.write_all(&chunk).await {
            // tar stopped reading: its exit status and message say why.
            fed = Err(io(format!("{context}: writing to {TAR}"))(e));
            break;
        }
    }
    drop(stdin);
    if fed.is_err() {
        let _ = child.start_kill();
    }
    let status = child.wait().await.map_err(io(format!("{context}: waiting for {TAR}")))?;
    let stderr = errors.await.unwrap_or_default();
    if !status.success() {
        return Err(SnapshotError::Archiver { context, status: status.to_string(), stderr: stderr.trim().to_string() });
    }
    fed
}

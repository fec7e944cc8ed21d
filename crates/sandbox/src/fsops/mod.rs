//! `agentvm vm-fs`: the VM filesystem API, executed inside the VM as the VM user.
//!
//! The host runs `/proc/self/exe vm-fs` through the VM's init like any other program: init
//! forks, the child drops to the VM user and every capability and execs `/proc/self/exe`, which
//! is the agentvm binary although its host path is not visible in the VM. So every operation
//! runs with the VM's mount namespace, user and permissions: the VM's isolation does the heavy
//! lifting, and [`resolve`] makes sure no path, symbolic link or `..` leads out of the VM's
//! root even so.
//!
//! One run executes one batch: it reads request frames from stdin until end of file, executes
//! each in order and answers each with one reply frame on stdout ([`wire`] describes the
//! format), then exits 0. Operation errors are part of the replies (as data: errno, system call, path; see
//! [`error`]); a malformed frame gets an `EINVAL` reply and ends the batch. Exit code 1 means
//! `vm-fs` could not run at all (its stderr says why).

pub mod error;
mod moves;
pub mod ops;
pub mod resolve;
pub mod tree;
pub mod wire;

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use nix::sys::stat::{umask, Mode};

use error::FsError;
use resolve::Root;
use wire::{read_frame_head, write_frame, FrameError, Op, Reply};

pub use moves::move_path;
pub use wire::{DirEntryInfo, EntryKind, FileStat};

/// The hidden subcommand of the agentvm binary that runs one batch of file operations.
pub const SUBCOMMAND: &str = "vm-fs";
/// The program the host starts in the VM: the agentvm binary, through the init's (and so the
/// child's) own executable link.
pub const PROGRAM: &str = "/proc/self/exe";
/// Most file content one batch reads (a single file beyond it fails with `EFBIG`). Keeps a
/// reply well below what the host captures from a program's output.
pub const MAX_READ_BYTES: u64 = 192 << 20;

/// Entry point of `agentvm vm-fs`. Never returns.
pub fn main() -> ! {
    // New files 0644 and directories 0755, as Node's defaults give under the usual umask.
    umask(Mode::from_bits_truncate(0o022));
    let result = Root::open_dir(Path::new("/")).and_then(|root| {
        let mut input = BufReader::with_capacity(1 << 16, io::stdin().lock());
        let mut output = BufWriter::with_capacity(1 << 16, io::stdout().lock());
        serve(&root, &mut input, &mut output)
    });
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("agentvm vm-fs: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// Executes the request frames of `input` against `root`, writing one reply frame each.
pub fn serve(root: &Root, input: &mut impl Read, output: &mut impl Write) -> io::Result<()> {
    let mut budget = MAX_READ_BYTES;
    loop {
        let (header, payload_len) = match read_frame_head(input) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(FrameError::Malformed(message)) => {
                write_frame(output, &Reply::error(FsError::MalformedRequest { detail: message }), &[])?;
                break;
            }
            Err(FrameError::Io(e)) => return Err(e),
        };
        let mut payload = input.by_ref().take(payload_len);
        let (reply, data) = match serde_json::from_slice::<Op>(&header) {
            Ok(op) => run(root, op, &mut payload, &mut budget),
            Err(e) => (Reply::error(FsError::MalformedRequest { detail: e.to_string() }), Vec::new()),
        };
        // Whatever of the payload the operation did not use (it failed early) is skipped.
        io::copy(&mut payload, &mut io::sink())?;
        let truncated = payload.limit() > 0;
        write_frame(output, &reply, &data)?;
        if truncated {
            write_frame(output, &Reply::error(FsError::MalformedRequest { detail: "truncated payload".into() }), &[])?;
            break;
        }
    }
    output.flush()
}

/// Executes one operation; returns its reply and the reply's payload.
fn run(root: &Root, op: Op, payload: &mut io::Take<&mut impl Read>, budget: &mut u64) -> (Reply, Vec<u8>) {
    let done = |result: error::FsResult<()>| (result.err().map(Reply::error).unwrap_or_default(), Vec::new());
    let listing = |result: error::FsResult<Vec<u8>>| match result {
        Ok(data) => (Reply::default(), data),
        Err(e) => (Reply::error(e), Vec::new()),
    };
    match op {
        Op::ReadFile { path } => listing(ops::read_file(root, &path, budget)),
        Op::WriteFile { path, create_parents } => {
            let len = payload.limit();
            done(ops::write_file(root, &path, payload, len, create_parents))
        }
        Op::Mkdir { path, recursive } => done(ops::mkdir(root, &path, recursive)),
        Op::Readdir { path } => listing(tree::readdir(root, &path).and_then(|names| to_json(&names))),
        Op::ReaddirRecursive { path, max_depth, exclude } => {
            listing(tree::readdir_recursive(root, &path, max_depth, &exclude).and_then(|entries| to_json(&entries)))
        }
        Op::Stat { path } => match ops::stat(root, &path) {
            Ok(stat) => (Reply { stat: Some(stat), ..Reply::default() }, Vec::new()),
            Err(e) => (Reply::error(e), Vec::new()),
        },
        Op::Exists { path } => match ops::exists(root, &path) {
            Ok(exists) => (Reply { exists: Some(exists), ..Reply::default() }, Vec::new()),
            Err(e) => (Reply::error(e), Vec::new()),
        },
        Op::Move { from, to } => done(move_path(root, &from, &to)),
        Op::Delete { path, recursive } => done(tree::delete(root, &path, recursive)),
    }
}

/// JSON encoding of a listing for a reply payload.
fn to_json<T: serde::Serialize>(value: &T) -> error::FsResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| FsError::Encoding { detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::wire::{decode_frames, encode_frame};
    use super::*;

    fn batch(root: &Root, input: &[u8]) -> Vec<(Reply, Vec<u8>)> {
        let mut output = Vec::new();
        serve(root, &mut &input[..], &mut output).unwrap();
        decode_frames::<Reply>(&output).unwrap().into_iter().map(|(r, p)| (r, p.to_vec())).collect()
    }

    #[test]
    fn a_batch_runs_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open_dir(dir.path()).unwrap();
        let mut input = Vec::new();
        let ops = [
            (Op::WriteFile { path: "/a/b/f".into(), create_parents: true }, &b"\x00\xffdata"[..]),
            (Op::ReadFile { path: "/a/b/f".into() }, &[]),
            (Op::ReadFile { path: "/../a/b/../b/f".into() }, &[]),
            (Op::Readdir { path: "/a".into() }, &[]),
            (Op::Exists { path: "/a/b".into() }, &[]),
            (Op::Move { from: "/a/b/f".into(), to: "/g".into() }, &[]),
            (Op::Delete { path: "/a".into(), recursive: false }, &[]),
            (Op::Delete { path: "/a".into(), recursive: true }, &[]),
            (Op::ReaddirRecursive { path: "/".into(), max_depth: None, exclude: Vec::new() }, &[]),
        ];
        for (op, payload) in &ops {
            encode_frame(&mut input, op, payload).unwrap();
        }
        let replies = batch(&root, &input);
        assert_eq!(replies.len(), ops.len());
        assert_eq!(replies[0].0, Reply::default());
        assert_eq!(replies[1].1, b"\x00\xffdata");
        assert_eq!(replies[2].1, b"\x00\xffdata");
        assert_eq!(replies[3].1, br#"["b"]"#);
        assert_eq!(replies[4].0.exists, Some(true));
        assert_eq!(replies[5].0, Reply::default());
        assert_eq!(replies[6].0.error, Some(error::fs_error(nix::errno::Errno::ENOTEMPTY, "rmdir", "/a")));
        assert_eq!(replies[7].0, Reply::default());
        assert_eq!(replies[8].1, br#"[{"path":"/g","type":"file","size":6}]"#);
        assert_eq!(std::fs::read(dir.path().join("g")).unwrap(), b"\x00\xffdata");
    }

    #[test]
    fn malformed_requests_get_an_error_reply() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open_dir(dir.path()).unwrap();
        // A header that is not an operation: an error for that frame; the batch goes on.
        let mut input = Vec::new();
        encode_frame(&mut input, &serde_json::json!({"op": "format", "path": "/"}), b"skipped").unwrap();
        encode_frame(&mut input, &Op::Exists { path: "/".into() }, &[]).unwrap();
        let replies = batch(&root, &input);
        assert!(matches!(replies[0].0.error, Some(FsError::MalformedRequest { .. })));
        assert_eq!(replies[1].0.exists, Some(true));
        // A truncated payload: the write fails, nothing is left behind, the batch ends.
        let mut input = Vec::new();
        encode_frame(&mut input, &Op::WriteFile { path: "/f".into(), create_parents: false }, b"0123456789").unwrap();
        input.truncate(input.len() - 4);
        let replies = batch(&root, &input);
        assert_eq!(replies.len(), 2);
        assert!(replies[0].0.error.is_some() && replies[1].0.error.is_some());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Garbage: one error reply.
        for garbage in [&[0xff_u8, 0xff, 0xff, 0xff][..], &[5, 0, 0, 0, b'{'], &[1]] {
            let replies = batch(&root, garbage);
            assert_eq!(replies.len(), 1);
            assert!(matches!(replies[0].0.error, Some(FsError::MalformedRequest { .. })));
        }
    }
}

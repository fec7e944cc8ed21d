//! The VM filesystem API of the reference product (agentOS "Filesystem actions"): `readFile`,
//! `writeFile`, `readFiles`, `writeFiles`, `mkdir`, `readdir`, `readdirRecursive`, `stat`,
//! `exists`, `move` and `delete`.
//!
//! Every call runs one batch of operations *inside* the VM, as the VM user: the host starts
//! `agentvm vm-fs` there through init like any program (see `agentvm_sandbox::fsops`), writes
//! the batch to its stdin and reads the replies from its stdout. So the VM's mount namespace,
//! user and permissions apply, and vm-fs's `openat2(RESOLVE_IN_ROOT)` resolution keeps every
//! path, `..` and symbolic link inside the VM's root. Paths must be absolute.
//!
//! Failures are [`VmError::FileSystem`] carrying a [`FileError`]: the operation's errno, system
//! call and path as vm-fs reported them (rendered in Node's style, `ENOENT: no such file or
//! directory, open '/home/user/x'`); a helper that cannot run or answers nonsense is an `EIO`.

use agentvm_sandbox::fsops::resolve::validate;
use agentvm_sandbox::fsops::wire::{decode_frames, encode_frame, Op, Reply};
use agentvm_sandbox::fsops::{PROGRAM, SUBCOMMAND};
use bytes::Bytes;
use serde::Deserialize;

pub use agentvm_types::{DirEntryInfo, EntryKind, FileStat, ReadFileResult, WriteFileResult};

use crate::error::{FileError, Result, VmError};
use crate::vm::Vm;

/// The encoded operations of one vm-fs run.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    count: usize,
}

impl Batch {
    fn push(&mut self, op: &Op, payload: &[u8]) -> Result<()> {
        encode_frame(&mut self.bytes, op, payload).map_err(FileError::Request)?;
        self.count += 1;
        Ok(())
    }
}

/// A reply and its payload.
struct Answer {
    reply: Reply,
    payload: Vec<u8>,
}

impl Answer {
    /// The operation's own error, if it failed.
    fn check(self) -> Result<Answer> {
        match self.reply.error {
            Some(error) => Err(error.into()),
            None => Ok(self),
        }
    }
}

impl Vm {
    /// `readFile`: the whole file (`ENOENT`, `EISDIR`...).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        validate(path, "open")?;
        Ok(self.run_one(&Op::ReadFile { path: path.into() }, &[]).await?.payload)
    }

    /// `writeFile`: creates or replaces the file, durably (temporary file, `fsync`, rename,
    /// directory `fsync`). The parent directory must exist (`ENOENT`); `/proc` and `/sys` are
    /// refused (`EACCES`); a symbolic link is followed inside the VM.
    pub async fn write_file(&self, path: &str, content: &[u8]) -> Result<()> {
        validate(path, "open")?;
        self.run_one(&Op::WriteFile { path: path.into(), create_parents: false }, content).await?;
        Ok(())
    }

    /// `readFiles`: each file's content or error, in order. Never fails as a whole.
    pub async fn read_files(&self, paths: &[String]) -> Vec<ReadFileResult> {
        let ops: Vec<(Op, &[u8])> = paths.iter().map(|p| (Op::ReadFile { path: p.clone() }, &[][..])).collect();
        let answers = self.run_many(&ops).await;
        paths
            .iter()
            .zip(answers)
            .map(|(path, answer)| match answer {
                Ok(Answer { payload, .. }) => {
                    ReadFileResult { path: path.clone(), content: Some(payload), error: None }
                }
                Err(e) => ReadFileResult { path: path.clone(), content: None, error: Some(e.to_string()) },
            })
            .collect()
    }

    /// `writeFiles`: writes each file (creating missing parent directories, `mkdir -p`),
    /// durably like [`Vm::write_file`]; each entry's success or error, in order.
    pub async fn write_files(&self, entries: Vec<(String, Vec<u8>)>) -> Vec<WriteFileResult> {
        let ops: Vec<(Op, &[u8])> = entries
            .iter()
            .map(|(path, content)| (Op::WriteFile { path: path.clone(), create_parents: true }, content.as_slice()))
            .collect();
        let answers = self.run_many(&ops).await;
        entries
            .iter()
            .zip(answers)
            .map(|((path, _), answer)| WriteFileResult {
                path: path.clone(),
                success: answer.is_ok(),
                error: answer.err().map(|e| e.to_string()),
            })
            .collect()
    }

    /// `mkdir`: one directory (`EEXIST`, `ENOENT` without a parent), or with `recursive` all
    /// missing ones (`mkdir -p`; existing directories are fine).
    pub async fn mkdir(&self, path: &str, recursive: bool) -> Result<()> {
        validate(path, "mkdir")?;
        self.run_one(&Op::Mkdir { path: path.into(), recursive }, &[]).await?;
        Ok(())
    }

    /// `readdir`: entry names, sorted, without `.` and `..`.
    pub async fn readdir(&self, path: &str) -> Result<Vec<String>> {
        validate(path, "scandir")?;
        let answer = self.run_one(&Op::Readdir { path: path.into() }, &[]).await?;
        parse_listing(&answer.payload)
    }

    /// `readdirRecursive`: every entry below `path`, breadth-first, with absolute paths; never
    /// follows symbolic links. `max_depth` 0 = immediate children only; `exclude` names entries
    /// to skip (and not descend into). At most 100,000 entries (`E2BIG` beyond).
    pub async fn readdir_recursive(
        &self,
        path: &str,
        max_depth: Option<u32>,
        exclude: &[String],
    ) -> Result<Vec<DirEntryInfo>> {
        validate(path, "scandir")?;
        let op = Op::ReaddirRecursive { path: path.into(), max_depth, exclude: exclude.to_vec() };
        let answer = self.run_one(&op, &[]).await?;
        parse_listing(&answer.payload)
    }

    /// `stat`: follows symbolic links, except `is_symbolic_link`, which describes the final
    /// component itself (`lstat`).
    pub async fn stat(&self, path: &str) -> Result<FileStat> {
        validate(path, "stat")?;
        let answer = self.run_one(&Op::Stat { path: path.into() }, &[]).await?;
        answer.reply.stat.ok_or_else(|| malformed("a stat reply without the stat"))
    }

    /// `exists`: whether the path resolves (symbolic links followed; a dangling link is `false`).
    pub async fn exists(&self, path: &str) -> Result<bool> {
        validate(path, "access")?;
        let answer = self.run_one(&Op::Exists { path: path.into() }, &[]).await?;
        answer.reply.exists.ok_or_else(|| malformed("an exists reply without the answer"))
    }

    /// `move`: renames `from` to `to` (replacing a file, or an empty directory, at `to`). Across
    /// filesystems (the VM's `/tmp` and its home directory) it copies (modes and times kept,
    /// symbolic links re-created) and then deletes the source.
    pub async fn move_path(&self, from: &str, to: &str) -> Result<()> {
        validate(from, "rename")?;
        validate(to, "rename")?;
        self.run_one(&Op::Move { from: from.into(), to: to.into() }, &[]).await?;
        Ok(())
    }

    /// `delete`: a file or symbolic link is unlinked; a directory is removed if empty
    /// (`ENOTEMPTY` otherwise) or, with `recursive`, with everything in it. Symbolic links are
    /// never followed.
    pub async fn delete_path(&self, path: &str, recursive: bool) -> Result<()> {
        validate(path, "rm")?;
        self.run_one(&Op::Delete { path: path.into(), recursive }, &[]).await?;
        Ok(())
    }

    /// Runs one operation; its own failure is the error.
    async fn run_one(&self, op: &Op, payload: &[u8]) -> Result<Answer> {
        let mut batch = Batch::default();
        batch.push(op, payload)?;
        let mut answers = self.run_batch(batch).await?;
        answers.pop().ok_or_else(|| malformed("no reply"))?.check()
    }

    /// Runs several operations in one vm-fs run; one result per operation, in order, a failure
    /// as the text `readFiles`/`writeFiles` report per entry. When the run itself fails, every
    /// operation gets that error.
    async fn run_many(&self, ops: &[(Op, &[u8])]) -> Vec<Result<Answer, String>> {
        let mut batch = Batch::default();
        let mut refused = Vec::with_capacity(ops.len());
        for (op, payload) in ops {
            refused.push(batch.push(op, payload).err());
        }
        let mut answers = match self.run_batch(batch).await {
            Ok(answers) => answers.into_iter(),
            Err(e) => {
                let message = e.to_string();
                return ops.iter().map(|_| Err(message.clone())).collect();
            }
        };
        refused
            .into_iter()
            .map(|refusal| match refusal {
                Some(e) => Err(e.to_string()),
                None => answers
                    .next()
                    .ok_or_else(|| malformed("a missing reply"))
                    .and_then(Answer::check)
                    .map_err(|e| e.to_string()),
            })
            .collect()
    }

    /// Starts vm-fs in the VM with `batch` as input; one answer per operation.
    async fn run_batch(&self, batch: Batch) -> Result<Vec<Answer>> {
        if batch.count == 0 {
            return Ok(Vec::new());
        }
        let argv = vec![PROGRAM.to_string(), SUBCOMMAND.to_string()];
        let (code, stdout, stderr) = self.run_capture(argv, Bytes::from(batch.bytes)).await?;
        if code != 0 {
            let stderr = String::from_utf8_lossy(&stderr);
            let stderr = stderr.trim().to_string();
            return Err(FileError::HelperFailed { exit_code: code, stderr }.into());
        }
        let frames = decode_frames::<Reply>(&stdout).map_err(|e| malformed(&e))?;
        if frames.len() != batch.count {
            let last =
                frames.last().and_then(|(reply, _)| reply.error.as_ref()).map(ToString::to_string).unwrap_or_default();
            return Err(malformed(&format!("{} replies to {} operations {last}", frames.len(), batch.count)));
        }
        Ok(frames.into_iter().map(|(reply, payload)| Answer { reply, payload: payload.to_vec() }).collect())
    }
}

fn parse_listing<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|e| malformed(&format!("a listing that does not parse: {e}")))
}

fn malformed(what: &str) -> VmError {
    FileError::HelperAnswer(what.trim().to_string()).into()
}

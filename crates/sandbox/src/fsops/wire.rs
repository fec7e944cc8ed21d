//! The wire format between the host and `agentvm vm-fs`: length-prefixed frames that carry a
//! small JSON header and raw bytes, so file contents travel without any encoding.
//!
//! ```text
//! frame   := header_len: u32 LE | header: JSON, header_len bytes | payload_len: u64 LE | payload
//! request := frame*            (stdin of vm-fs, until end of file; header = an [`Op`])
//! reply   := frame*            (stdout of vm-fs, one per request frame, in order; header = a [`Reply`])
//! ```
//!
//! Headers are at most [`MAX_HEADER`] bytes. Payloads are: the content to write (`writeFile`),
//! the content read (`readFile`), or a JSON array (`readdir`: names, `readdirRecursive`:
//! [`DirEntryInfo`]s); every other frame has an empty payload. A reader can process a request
//! frame by frame and stream a payload straight into a file.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::error::FsError;

/// Largest header accepted in either direction.
pub const MAX_HEADER: u32 = 1 << 20;

/// One operation of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Op {
    /// Payload of the reply: the file's bytes.
    ReadFile {
        path: String,
    },
    /// Payload of the request: the new content. `createParents`: `mkdir -p` the parent first.
    WriteFile {
        path: String,
        #[serde(default)]
        create_parents: bool,
    },
    Mkdir {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
    /// Payload of the reply: a JSON array of names.
    Readdir {
        path: String,
    },
    /// Payload of the reply: a JSON array of [`DirEntryInfo`].
    ReaddirRecursive {
        path: String,
        #[serde(default)]
        max_depth: Option<u32>,
        #[serde(default)]
        exclude: Vec<String>,
    },
    Stat {
        path: String,
    },
    Exists {
        path: String,
    },
    Move {
        from: String,
        to: String,
    },
    Delete {
        path: String,
        #[serde(default)]
        recursive: bool,
    },
}

/// The header of one reply frame. `error` is set when the operation failed: what failed, as
/// data ([`FsError`]: errno, system call and path), never as text to parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FsError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<FileStat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

impl Reply {
    pub fn error(error: FsError) -> Reply {
        Reply { error: Some(error), ..Reply::default() }
    }
}

/// The listing and stat types live in `agentvm-types`, shared with the server and the client.
pub use agentvm_types::{DirEntryInfo, EntryKind, FileStat};

/// Appends one frame to `out`.
pub fn encode_frame<H: Serialize>(out: &mut Vec<u8>, header: &H, payload: &[u8]) -> Result<(), String> {
    let json = serde_json::to_vec(header).map_err(|e| format!("encoding a frame header: {e}"))?;
    let len = u32::try_from(json.len()).ok().filter(|&n| n <= MAX_HEADER).ok_or("frame header too large")?;
    out.reserve(json.len() + payload.len() + 12);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Writes one frame to `out`.
pub fn write_frame<H: Serialize>(out: &mut impl Write, header: &H, payload: &[u8]) -> io::Result<()> {
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|&n| n <= MAX_HEADER)
        .ok_or_else(|| io::Error::other("frame header too large"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&json)?;
    out.write_all(&(payload.len() as u64).to_le_bytes())?;
    out.write_all(payload)
}

/// Why a frame could not be read from a stream.
#[derive(Debug)]
pub enum FrameError {
    /// The stream does not follow the format; the rest of it cannot be trusted.
    Malformed(String),
    /// Reading failed.
    Io(io::Error),
}

/// Reads the next frame's header from a stream and returns it with the payload's length; the
/// caller then reads (or skips) exactly that many bytes. `None` at a clean end of stream.
pub fn read_frame_head(input: &mut impl Read) -> Result<Option<(Vec<u8>, u64)>, FrameError> {
    let mut len = [0u8; 4];
    match read_full(input, &mut len).map_err(FrameError::Io)? {
        0 => return Ok(None),
        4 => {}
        _ => return Err(FrameError::Malformed("truncated frame length".into())),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(FrameError::Malformed(format!("frame header of {len} bytes (limit {MAX_HEADER})")));
    }
    let mut header = vec![0u8; len as usize];
    if read_full(input, &mut header).map_err(FrameError::Io)? != header.len() {
        return Err(FrameError::Malformed("truncated frame header".into()));
    }
    let mut payload_len = [0u8; 8];
    if read_full(input, &mut payload_len).map_err(FrameError::Io)? != 8 {
        return Err(FrameError::Malformed("truncated payload length".into()));
    }
    Ok(Some((header, u64::from_le_bytes(payload_len))))
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Splits a complete reply stream (held in memory) into frames: each header decoded as `H`,
/// each payload as a slice of `bytes`.
pub fn decode_frames<'a, H: for<'de> Deserialize<'de>>(mut bytes: &'a [u8]) -> Result<Vec<(H, &'a [u8])>, String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = split(bytes, 4).ok_or("truncated frame length")?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| "bad frame length")?);
        if len > MAX_HEADER {
            return Err(format!("frame header of {len} bytes (limit {MAX_HEADER})"));
        }
        let (json, rest) = split(rest, len as usize).ok_or("truncated frame header")?;
        let header: H = serde_json::from_slice(json).map_err(|e| format!("bad frame header: {e}"))?;
        let (payload_len, rest) = split(rest, 8).ok_or("truncated payload length")?;
        let payload_len = u64::from_le_bytes(payload_len.try_into().map_err(|_| "bad payload length")?);
        let payload_len = usize::try_from(payload_len).map_err(|_| "payload too large")?;
        let (payload, rest) = split(rest, payload_len).ok_or("truncated payload")?;
        frames.push((header, payload));
        bytes = rest;
    }
    Ok(frames)
}

fn split(bytes: &[u8], at: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= at).then(|| bytes.split_at(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let op = Op::WriteFile { path: "/a".into(), create_parents: true };
        encode_frame(&mut buf, &op, &[0, 255, 1]).unwrap();
        encode_frame(&mut buf, &Op::Stat { path: "/b".into() }, &[]).unwrap();
        let frames: Vec<(Op, &[u8])> = decode_frames(&buf).unwrap();
        assert_eq!(frames, vec![(op, &[0u8, 255, 1][..]), (Op::Stat { path: "/b".into() }, &[][..])]);

        let mut input = &buf[..];
        let (header, len) = read_frame_head(&mut input).unwrap().unwrap();
        assert_eq!(
            serde_json::from_slice::<Op>(&header).unwrap(),
            Op::WriteFile { path: "/a".into(), create_parents: true }
        );
        assert_eq!(len, 3);
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert!(decode_frames::<Reply>(&[1, 0]).is_err());
        assert!(decode_frames::<Reply>(&[255, 255, 255, 255]).is_err());
        let mut buf = Vec::new();
        encode_frame(&mut buf, &Reply::default(), b"abc").unwrap();
        for cut in 1..buf.len() {
            assert!(decode_frames::<Reply>(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(read_frame_head(&mut &[9u8, 0, 0][..]), Err(FrameError::Malformed(_))));
        assert!(matches!(read_frame_head(&mut &[][..]), Ok(None)));
    }

    #[test]
    fn wire_names() {
        let op = Op::ReaddirRecursive { path: "/".into(), max_depth: Some(1), exclude: vec!["x".into()] };
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            r#"{"op":"readdirRecursive","path":"/","maxDepth":1,"exclude":["x"]}"#
        );
        let entry = DirEntryInfo { path: "/a".into(), kind: EntryKind::Symlink, size: 1 };
        assert_eq!(serde_json::to_string(&entry).unwrap(), r#"{"path":"/a","type":"symlink","size":1}"#);
    }
}

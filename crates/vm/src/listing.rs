//! `allProcesses`: what init lists from the VM's `/proc`, completed with what the host remembers
//! of the processes it spawned.
//!
//! `/proc` shows a process only until it is reaped, and never when it exited. The host keeps
//! the record of every spawned process after its exit (the last
//! [`crate::process::EXITED_RETENTION`], as `listProcesses` and `getProcess` do), with its exit
//! code and exit time. So a listing is:
//!
//! - every process of `/proc`, and for one the host spawned that has exited meanwhile (a zombie,
//!   or reaped between the two looks) its exit as the host knows it;
//! - then every remembered exited spawned process that `/proc` no longer shows, unless its pid
//!   now belongs to another process (a listing never shows a pid twice).
//!
//! `exitTime` is known only for processes the host spawned: a zombie of another parent (a
//! shell's job not yet waited for) is `exited` with `exitTime` `null`.

use std::collections::{HashMap, HashSet};

use agentvm_sandbox::protocol::ProcessEntry;

use crate::types::ProcessInfo;

/// What the host remembers of a process it spawned.
#[derive(Debug, Clone)]
pub(crate) struct Remembered {
    pub pid: i32,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    /// As init read it from `/proc` when it started the process (identical to the listing's).
    pub start_time_ms: u64,
    /// `Some` once its exit is published.
    pub exit: Option<(i32, u64)>,
}

/// The listing `entries` (from `/proc`, in pid order) completed with the `spawned` records.
pub(crate) fn merge(entries: Vec<ProcessEntry>, spawned: Vec<Remembered>) -> Vec<ProcessInfo> {
    let mut by_pid: HashMap<i32, Remembered> = spawned.into_iter().map(|r| (r.pid, r)).collect();
    let listed: HashSet<i32> = entries.iter().map(|e| e.pid).collect();
    let mut all: Vec<ProcessInfo> = entries
        .into_iter()
        .map(|e| {
            // The same process only if it also started at the same time (pids are reused).
            let record = by_pid.remove(&e.pid).filter(|r| r.start_time_ms == e.start_time_ms);
            let exit = record.and_then(|r| r.exit);
            let exited = e.exited || exit.is_some();
            ProcessInfo {
                pid: e.pid,
                ppid: e.ppid,
                pgid: e.pgid,
                sid: e.sid,
                driver: "native".into(),
                command: e.command,
                args: e.args,
                cwd: e.cwd,
                status: if exited { "exited" } else { "running" }.into(),
                exit_code: exit.map(|(code, _)| code).or(e.exit_code),
                start_time: e.start_time_ms,
                exit_time: exit.map(|(_, time)| time),
            }
        })
        .collect();
    let mut gone: Vec<ProcessInfo> = by_pid
        .into_values()
        .filter(|r| !listed.contains(&r.pid))
        .filter_map(|r| {
            let (code, time) = r.exit?;
            // A spawned process leads its own session and group, with init as its parent.
            Some(ProcessInfo {
                pid: r.pid,
                ppid: 1,
                pgid: r.pid,
                sid: r.pid,
                driver: "native".into(),
                command: r.command,
                args: r.args,
                cwd: r.cwd,
                status: "exited".into(),
                exit_code: Some(code),
                start_time: r.start_time_ms,
                exit_time: Some(time),
            })
        })
        .collect();
    all.append(&mut gone);
    all.sort_by_key(|p| p.pid);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i32, exited: bool, start: u64) -> ProcessEntry {
        ProcessEntry {
            pid,
            ppid: 1,
            pgid: pid,
            sid: pid,
            command: "sleep".into(),
            args: vec!["1".into()],
            cwd: "/home/user".into(),
            exited,
            exit_code: exited.then_some(0),
            start_time_ms: start,
        }
    }

    fn remembered(pid: i32, start: u64, exit: Option<(i32, u64)>) -> Remembered {
        Remembered {
            pid,
            command: "sh".into(),
            args: vec!["-c".into(), "exit 3".into()],
            cwd: "/tmp".into(),
            start_time_ms: start,
            exit,
        }
    }

    #[test]
    fn remembered_exits_complete_the_listing() {
        let all = merge(
            vec![entry(2, false, 100), entry(5, true, 120), entry(9, false, 300)],
            vec![
                // Running: as listed.
                remembered(2, 100, None),
                // Exited, a zombie or reaped meanwhile: its exit as the host knows it.
                remembered(5, 120, Some((3, 150))),
                // Exited and reaped: from the record.
                remembered(7, 130, Some((3, 160))),
                // Its pid now belongs to another process (listed, started later): not shown twice.
                remembered(9, 140, Some((1, 170))),
            ],
        );
        let summary: Vec<_> =
            all.iter().map(|p| (p.pid, p.status.as_str(), p.exit_code, p.start_time, p.exit_time)).collect();
        assert_eq!(
            summary,
            [
                (2, "running", None, 100, None),
                (5, "exited", Some(3), 120, Some(150)),
                (7, "exited", Some(3), 130, Some(160)),
                (9, "running", None, 300, None),
            ]
        );
        let gone = &all[2];
        assert_eq!((gone.ppid, gone.pgid, gone.sid, gone.cwd.as_str()), (1, 7, 7, "/tmp"));
        assert_eq!((gone.command.as_str(), gone.args.as_slice()), ("sh", &["-c".to_string(), "exit 3".into()][..]));
    }

    #[test]
    fn a_zombie_of_another_parent_has_no_exit_time() {
        let all = merge(vec![entry(4, true, 100)], vec![]);
        assert_eq!((all[0].status.as_str(), all[0].exit_code, all[0].exit_time), ("exited", Some(0), None));
    }
}

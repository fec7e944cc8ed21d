//! Listing the VM's processes from its own `/proc` (init sees exactly the VM's PID namespace).

use std::fs;
use std::sync::OnceLock;

use crate::protocol::ProcessEntry;

/// Every process of the VM except init (pid 1), in pid order. Processes that vanish while being
/// read are skipped.
pub fn list() -> Vec<ProcessEntry> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    let mut entries: Vec<ProcessEntry> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != 1)
        .filter_map(read)
        .collect();
    entries.sort_by_key(|e| e.pid);
    entries
}

fn read(pid: i32) -> Option<ProcessEntry> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let stat = parse_stat(&stat)?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut argv: Vec<String> =
        cmdline.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    let command = if argv.is_empty() { stat.comm.clone() } else { argv.remove(0) };
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let exited = stat.state == 'Z' || stat.state == 'X';
    Some(ProcessEntry {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgid,
        sid: stat.sid,
        command,
        args: argv,
        cwd,
        exited,
        exit_code: exited.then(|| decode_wait_status(stat.exit_status)),
        start_time_ms: start_time_of(&stat),
    })
}

/// When process `pid` started (milliseconds since the Unix epoch), as [`list`] reports it.
pub fn start_time_ms(pid: i32) -> Option<u64> {
    let stat = parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(start_time_of(&stat))
}

fn start_time_of(stat: &Stat) -> u64 {
    boot_time_ms() + stat.start_ticks * 1000 / clock_ticks()
}

#[derive(Debug, PartialEq)]
struct Stat {
    comm: String,
    state: char,
    ppid: i32,
    pgid: i32,
    sid: i32,
    start_ticks: u64,
    exit_status: i32,
}

/// `/proc/<pid>/stat`: `pid (comm) state ppid pgrp session ... starttime(22) ... exit_code(52)`.
/// `comm` may contain spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = s.get(close + 2..)?.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgid: field(5)?.parse().ok()?,
        sid: field(6)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
        exit_status: field(52).and_then(|f| f.parse().ok()).unwrap_or(0),
    })
}

/// A raw wait status as agentvm reports it: the code, or 128+signal.
fn decode_wait_status(status: i32) -> i32 {
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        128 + (status & 0x7f)
    }
}

fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf has no memory effects.
    *TICKS.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    })
}

/// When the machine booted, in milliseconds since the Unix epoch: the realtime clock minus the
/// boot-time clock, which the start times of `/proc/<pid>/stat` count from. Not `/proc/stat`'s
/// `btime`, which has whole seconds only (start times would be up to a second early).
fn boot_time_ms() -> u64 {
    static BOOT: OnceLock<u64> = OnceLock::new();
    *BOOT.get_or_init(|| clock_ms(libc::CLOCK_REALTIME).saturating_sub(clock_ms(libc::CLOCK_BOOTTIME)))
}

/// Reads `clock` in milliseconds (0 if it cannot be read, which these clocks always can).
fn clock_ms(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through the pointer, which points to a live
    // local.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1000 + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_tricky_comm() {
        let mut line = String::from("42 (a) b (c) S 7 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345");
        for _ in 23..52 {
            line.push_str(" 0");
        }
        line.push_str(" 256\n");
        let stat = parse_stat(&line).unwrap();
        assert_eq!(stat.comm, "a) b (c");
        assert_eq!((stat.state, stat.ppid, stat.pgid, stat.sid), ('S', 7, 42, 42));
        assert_eq!(stat.start_ticks, 12345);
        assert_eq!(stat.exit_status, 256);
        assert_eq!(decode_wait_status(256), 1);
        assert_eq!(decode_wait_status(9), 137);
    }

    #[test]
    fn lists_this_process() {
        let me = std::process::id() as i32;
        let entry = read(me).unwrap();
        assert_eq!(entry.pid, me);
        assert!(!entry.exited);
        assert!(entry.start_time_ms > 1_500_000_000_000);
    }

    #[test]
    fn a_new_process_started_now_to_the_tick() {
        let before = clock_ms(libc::CLOCK_REALTIME);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        // Readable until reaped, even once it has exited.
        let started = start_time_ms(child.id() as i32).unwrap();
        let after = clock_ms(libc::CLOCK_REALTIME);
        child.wait().unwrap();
        // Start times count whole clock ticks (10 ms), rounded down.
        let tick = 1000 / clock_ticks();
        assert!(started + tick + 1 >= before && started <= after, "{before} <= {started} <= {after}");
    }
}

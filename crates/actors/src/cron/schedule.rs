//! When a job runs: a cron pattern or a one-shot timestamp, in a time zone.
//!
//! - **Patterns** have croner's semantics (the library the reference product uses): five
//!   fields (minute hour day-of-month month day-of-week) or six with seconds first; names
//!   (`MON`, `JAN`), ranges, steps, lists, `L`, `W`, `#`, `?`, and `@yearly` / `@monthly` /
//!   `@weekly` / `@daily` / `@hourly`. Day of month and day of week combine with OR, as in
//!   Vixie cron (a `+` before the day of week makes it AND).
//! - **One-shots** are `YYYY-MM-DD[ T]HH:MM[:SS[.mmm]][Z|±HH:MM]`; without an offset the time
//!   is read in the job's time zone.
//! - **Cost.** Finding the next time of a rare pattern (`0 0 29 2 +MON`, the 29th of February
//!   on a Monday) searches years ahead, and croner gives up on one that never matches after
//!   about 10 ms (optimised build): callers run these computations on blocking threads.
//! - **Time zones** are IANA names (`Europe/Paris`); the default is UTC. A pattern follows the
//!   zone's daylight-saving changes as croner does.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid schedule {schedule:?}: {reason}")]
    Invalid { schedule: String, reason: String },
    #[error("unknown time zone {0:?} (use an IANA name such as \"Europe/Paris\", or \"UTC\")")]
    TimeZone(String),
    #[error("the one-shot time {schedule:?} is in the past (now is {now})")]
    Past { schedule: String, now: String },
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    zone: Tz,
}

#[derive(Debug, Clone)]
enum Kind {
    Pattern(Box<Cron>),
    Once { at_ms: u64 },
}

/// How far ahead [`Schedule::shortest_interval`] looks, and how many runs at most.
const INTERVAL_HORIZON_MS: u64 = 366 * 86_400_000;
const INTERVAL_SAMPLES: usize = 1_500;

impl Schedule {
    /// Parses `schedule` in `zone` (an IANA name; `None`: UTC).
    pub fn parse(schedule: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let zone = match zone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| ScheduleError::TimeZone(name.to_string()))?,
        };
        let invalid = |reason: String| ScheduleError::Invalid { schedule: schedule.to_string(), reason };
        let text = schedule.trim();
        if text.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        if looks_like_timestamp(text) {
            let at_ms = parse_timestamp(text, zone).map_err(invalid)?;
            return Ok(Schedule { kind: Kind::Once { at_ms }, zone });
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(text).map_err(|e| invalid(e.to_string()))?;
        let schedule = Schedule { kind: Kind::Pattern(Box::new(cron)), zone };
        // A pattern that never matches (`0 0 30 2 *`) is as wrong as a malformed one.
        if schedule.next_after(crate::actors::now_ms()).is_none() {
            return Err(invalid("it never matches a date".into()));
        }
        Ok(schedule)
    }

    /// Whether this is a one-shot.
    pub fn is_once(&self) -> bool {
        matches!(self.kind, Kind::Once { .. })
    }

    /// The first run strictly after `after_ms` (milliseconds since the Unix epoch), if any.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match &self.kind {
            Kind::Once { at_ms } => (*at_ms > after_ms).then_some(*at_ms),
            Kind::Pattern(cron) => {
                let after = self.zone.from_utc_datetime(&to_utc(after_ms)?.naive_utc());
                let next = cron.find_next_occurrence(&after, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }

    /// The one-shot's time; `None` for a pattern.
    pub fn once_at(&self) -> Option<u64> {
        match self.kind {
            Kind::Once { at_ms } => Some(at_ms),
            Kind::Pattern(_) => None,
        }
    }

    /// The shortest gap between two consecutive runs from `from_ms` on (looking a year ahead,
    /// at most 1,500 runs); `None` for a one-shot or a pattern that runs at most once in that
    /// time.
    pub fn shortest_interval(&self, from_ms: u64) -> Option<u64> {
        if self.is_once() {
            return None;
        }
        let mut previous = self.next_after(from_ms)?;
        let mut shortest: Option<u64> = None;
        for _ in 0..INTERVAL_SAMPLES {
            let Some(next) = self.next_after(previous) else { break };
            let gap = next - previous;
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            if next - from_ms > INTERVAL_HORIZON_MS {
                break;
            }
            previous = next;
        }
        shortest
    }
}

/// A one-shot starts with a four-digit year and a dash; a pattern never does.
fn looks_like_timestamp(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 5 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// `YYYY-MM-DD[ T]HH:MM[:SS[.mmm]][Z|±HH:MM]` → milliseconds since the Unix epoch.
fn parse_timestamp(text: &str, zone: Tz) -> Result<u64, String> {
    const SHAPE: &str = "expected YYYY-MM-DD[ T]HH:MM[:SS[.mmm]][Z|±HH:MM]";
    let (local, offset) = split_offset(text)?;
    let local = local.replacen(' ', "T", 1);
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(&local, format).ok())
        .ok_or_else(|| SHAPE.to_string())?;
    let millis = match offset {
        Some(seconds) => {
            let offset =
                chrono::FixedOffset::east_opt(seconds).ok_or_else(|| "the offset is out of range".to_string())?;
            match offset.from_local_datetime(&naive) {
                LocalResult::Single(at) => at.timestamp_millis(),
                _ => return Err(SHAPE.to_string()),
            }
        }
        None => match zone.from_local_datetime(&naive) {
            LocalResult::Single(at) => at.timestamp_millis(),
            // The hour repeated when clocks go back: the first of the two.
            LocalResult::Ambiguous(first, _) => first.timestamp_millis(),
            LocalResult::None => return Err(format!("{local} does not exist in {zone} (clocks move forward then)")),
        },
    };
    u64::try_from(millis).map_err(|_| "the time is before 1970".to_string())
}

/// Splits a trailing `Z` or `±HH:MM` off; the offset in seconds east of UTC.
fn split_offset(text: &str) -> Result<(&str, Option<i32>), String> {
    if let Some(local) = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
        return Ok((local, Some(0)));
    }
    if text.len() > 16 {
        let (local, tail) = text.split_at(text.len() - 6);
        let bytes = tail.as_bytes();
        if matches!(bytes[0], b'+' | b'-') && bytes[3] == b':' {
            let number = |range: std::ops::Range<usize>| {
                tail.get(range).and_then(|t| t.parse::<i32>().ok()).ok_or_else(|| format!("bad offset {tail:?}"))
            };
            let (hours, minutes) = (number(1..3)?, number(4..6)?);
            if hours > 23 || minutes > 59 {
                return Err(format!("bad offset {tail:?}"));
            }
            let sign = if bytes[0] == b'-' { -1 } else { 1 };
            return Ok((local, Some(sign * (hours * 3600 + minutes * 60))));
        }
    }
    Ok((text, None))
}

fn to_utc(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).ok()?)
}

/// `ms` as an RFC 3339 time in UTC, for messages.
pub fn format_ms(ms: u64) -> String {
    to_utc(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis() as u64
    }

    #[test]
    fn patterns_have_croner_semantics() {
        let every_minute = Schedule::parse("* * * * *", None).unwrap();
        assert_eq!(every_minute.next_after(ms("2030-01-01T00:00:30Z")), Some(ms("2030-01-01T00:01:00Z")));
        assert_eq!(every_minute.next_after(ms("2030-01-01T00:01:00Z")), Some(ms("2030-01-01T00:02:00Z")));
        assert_eq!(every_minute.shortest_interval(ms("2030-01-01T00:00:00Z")), Some(60_000));
        let weekdays = Schedule::parse("30 9 * * MON-FRI", None).unwrap();
        // 2030-01-05 is a Saturday: the next run is Monday the 7th.
        assert_eq!(weekdays.next_after(ms("2030-01-04T10:00:00Z")), Some(ms("2030-01-07T09:30:00Z")));
        let seconds = Schedule::parse("*/10 * * * * *", None).unwrap();
        assert_eq!(seconds.shortest_interval(ms("2030-01-01T00:00:00Z")), Some(10_000));
        let nightly = Schedule::parse("@daily", None).unwrap();
        assert_eq!(nightly.next_after(ms("2030-01-01T12:00:00Z")), Some(ms("2030-01-02T00:00:00Z")));
        let last_day = Schedule::parse("0 0 L * *", None).unwrap();
        assert_eq!(last_day.next_after(ms("2030-02-01T00:00:00Z")), Some(ms("2030-02-28T00:00:00Z")));
        assert_eq!(last_day.shortest_interval(ms("2030-01-01T00:00:00Z")), Some(28 * 86_400_000));
    }

    #[test]
    fn time_zones_apply_to_patterns_and_local_one_shots() {
        let paris = Schedule::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        // 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
        assert_eq!(paris.next_after(ms("2030-01-10T00:00:00Z")), Some(ms("2030-01-10T08:00:00Z")));
        assert_eq!(paris.next_after(ms("2030-07-10T00:00:00Z")), Some(ms("2030-07-10T07:00:00Z")));
        let once = Schedule::parse("2030-01-10 09:00", Some("Europe/Paris")).unwrap();
        assert_eq!(once.once_at(), Some(ms("2030-01-10T08:00:00Z")));
        assert!(matches!(Schedule::parse("* * * * *", Some("Mars/Olympus")), Err(ScheduleError::TimeZone(_))));
    }

    #[test]
    fn one_shots_take_every_documented_form() {
        let cases = [
            ("2030-01-02T03:04", "2030-01-02T03:04:00Z"),
            ("2030-01-02 03:04:05", "2030-01-02T03:04:05Z"),
            ("2030-01-02T03:04:05.678Z", "2030-01-02T03:04:05.678Z"),
            ("2030-01-02T03:04:05+02:00", "2030-01-02T01:04:05Z"),
            ("2030-01-02T03:04-05:30", "2030-01-02T08:34:00Z"),
        ];
        for (text, expected) in cases {
            let once = Schedule::parse(text, None).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(once.is_once());
            assert_eq!(once.once_at(), Some(ms(expected)), "{text}");
            assert_eq!(once.next_after(ms(expected) - 1), Some(ms(expected)));
            assert_eq!(once.next_after(ms(expected)), None);
        }
    }

    #[test]
    fn malformed_schedules_are_refused_with_the_reason() {
        for bad in [
            "",
            "   ",
            "* * * *",
            "61 * * * *",
            "* * * * * * *",
            "hello",
            "0 0 30 2 *",
            "2030-13-01T00:00",
            "2030-01-01",
            "2030-01-01T25:00",
            "2030-01-01T00:00+25:00",
        ] {
            let e = Schedule::parse(bad, None).expect_err(bad);
            assert!(matches!(e, ScheduleError::Invalid { .. }), "{bad}: {e:?}");
            assert!(e.to_string().contains("invalid schedule"), "{e}");
        }
    }
}

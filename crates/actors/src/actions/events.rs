//! Event actions: `getVmEvents({since?, limit?})` reads the VM's durable event log after
//! `since` (at most `limit` events and about 16 MiB of payload per call: page on with `since`
//! set to the last `seq` returned). It never boots the VM.

use std::sync::Arc;

use agentvm_protocol::Value;

use super::args::Args;
use crate::actors::Actor;
use crate::error::ActorError;

/// The actions of this family.
pub const NAMES: &[&str] = &["getVmEvents"];

/// Most events `getVmEvents` returns at once.
const MAX_EVENTS_PER_CALL: u64 = 10_000;
/// Events returned when the call gives no `limit`.
const DEFAULT_EVENTS_PER_CALL: usize = 1000;

/// A validated event action.
pub(super) enum Call {
    Read { since: Option<u64>, limit: usize },
}

/// The call for `name`, or `None` when `name` is not an event action.
pub(super) fn parse(name: &str, args: &Args<'_>) -> Result<Option<Call>, ActorError> {
    Ok(Some(match name {
        "getVmEvents" => {
            let options = args.options(0)?;
            let since = whole_number(options.number("since")?, u64::MAX, "getVmEvents", "since")?;
            let limit = whole_number(options.number("limit")?, MAX_EVENTS_PER_CALL, "getVmEvents", "limit")?;
            if limit == Some(0) {
                return Err(ActorError::InvalidArguments(format!(
                    "getVmEvents: option `limit` must be a whole number from 1 to {MAX_EVENTS_PER_CALL}, got 0"
                )));
            }
            // Sequence numbers are u64; a `since` at or past the newest is simply "nothing yet".
            Call::Read { since, limit: limit.map_or(DEFAULT_EVENTS_PER_CALL, |n| n as usize) }
        }
        _ => return Ok(None),
    }))
}

/// Runs an event action (no VM needed).
pub(super) async fn run(actor: &Arc<Actor>, call: Call) -> Result<Value, ActorError> {
    let Call::Read { since, limit } = call;
    let events = actor.events_after(since, limit).await?;
    Ok(Value::Array(
        events
            .iter()
            .map(|e| {
                Value::object([
                    ("seq", Value::from(e.seq)),
                    ("name", Value::from(e.name.as_str())),
                    ("data", crate::events::stored_payload(e)),
                    ("createdAt", Value::from(e.created_ms)),
                ])
            })
            .collect(),
    ))
}

/// A whole number from 0 to `max` (`None` when absent). NaN, infinities, fractions and
/// negative numbers are refused with a message naming the option; numbers past `max` too,
/// except for `u64::MAX` as `max`, where a larger number saturates (f64 cannot say 2^64 - 1).
fn whole_number(value: Option<f64>, max: u64, action: &str, option: &str) -> Result<Option<u64>, ActorError> {
    let Some(n) = value else { return Ok(None) };
    let in_range = n.is_finite() && n >= 0.0 && n.fract() == 0.0 && (max == u64::MAX || n <= max as f64);
    if !in_range {
        return Err(ActorError::InvalidArguments(format!(
            "{action}: option `{option}` must be a whole number from 0 to {max}, got {n}"
        )));
    }
    // `as` saturates at u64::MAX for 2^64 and above.
    Ok(Some(n as u64))
}

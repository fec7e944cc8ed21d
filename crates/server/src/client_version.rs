//! The protocol version of a client whose messages carry none.
//!
//! bare messages start with the client's protocol version, json and cbor ones do not; yet one
//! json answer differs by version: an action that returns nothing must resolve to `undefined`
//! in clients 2.3, which revive `["$Undefined",0]`, while older clients throw on it (see
//! [`agentvm_protocol::JSON_UNDEFINED_SINCE`]). What a request tells of its client:
//!
//! | Sign | Client | Version |
//! | --- | --- | --- |
//! | `user-agent: RivetKit/2.3.19` (Node sends it) | 2.3.x / 2.1–2.2 / 2.0 | 4 / 3 / 2 |
//! | the actor addressed by name with `rvt-*` query parameters | 2.3 (earlier clients address by id) | 4 |
//!
//! Anything else (a browser's client, which cannot set `user-agent`, addressing by id; curl
//! by id) is not known, and gets what every client accepts.

use axum::http::{header, HeaderMap};

/// The version of clients whose requests a Rivet Engine tunnels here when nothing else tells:
/// the engine (2.3.19) speaks version 4, so its clients do too (older ones fail against it).
pub const ENGINE_CLIENTS: u16 = 4;

use crate::gateway::{Addressed, Target};

/// The protocol version of the client that sent a json or cbor request, if the request tells.
pub fn of_request(addressed: &Addressed, headers: &HeaderMap) -> Option<u16> {
    let by_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).and_then(of_user_agent);
    let by_address = matches!(addressed.target, Target::Name { .. }).then_some(4);
    by_agent.or(by_address)
}

/// The protocol version of a `RivetKit/<major>.<minor>...` user agent.
fn of_user_agent(agent: &str) -> Option<u16> {
    let version = agent.strip_prefix("RivetKit/")?;
    let mut parts = version.split(['.', ' ', '-']);
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some(match (major, minor) {
        (0 | 1, _) => return None,
        (2, 0) => 2,
        (2, 1 | 2) => 3,
        _ => 4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentvm_protocol::keys::Key;

    fn addressed(by_name: bool) -> Addressed {
        let target = if by_name {
            Target::Name { namespace: "default".into(), name: "vm".into(), key: Key::default(), create: true }
        } else {
            Target::Id("abc".into())
        };
        Addressed { target, token: None, input: None }
    }

    fn agent(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, value.parse().unwrap());
        headers
    }

    #[test]
    fn the_user_agent_tells_the_version() {
        for (agent_value, version) in [
            ("RivetKit/2.3.19", Some(4)),
            ("RivetKit/2.3.9", Some(4)),
            ("RivetKit/3.0.0", Some(4)),
            ("RivetKit/2.2.1", Some(3)),
            ("RivetKit/2.1.7", Some(3)),
            ("RivetKit/2.0.33", Some(2)),
            ("RivetKit/x", None),
            ("curl/8.5.0", None),
        ] {
            assert_eq!(of_request(&addressed(false), &agent(agent_value)), version, "{agent_value}");
        }
    }

    #[test]
    fn addressing_by_name_is_a_2_3_client() {
        assert_eq!(of_request(&addressed(true), &HeaderMap::new()), Some(4));
        assert_eq!(of_request(&addressed(false), &HeaderMap::new()), None);
        // The user agent, when there is one, says more.
        assert_eq!(of_request(&addressed(true), &agent("RivetKit/2.2.1")), Some(3));
    }
}

//! Which actor a gateway request addresses.
//!
//! `/gateway/{segment}/...` has two forms:
//! - **query form** (clients 2.3): any `rvt-*` query parameter makes `segment` an actor *name*;
//!   `rvt-method` (`get` | `getOrCreate`), `rvt-namespace`, `rvt-key` (comma-joined), `rvt-token`
//!   say the rest. Unknown `rvt-*` parameters are ignored.
//! - **id form** (clients 2.0–2.2, `getForId`): `segment` is an actor id, optionally followed by
//!   `@token`.

use axum::http::StatusCode;

use crate::error::ApiError;
use agentvm_protocol::keys::{self, Key};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Name { namespace: String, name: String, key: Key, create: bool },
    Id(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    pub target: Target,
    /// A token given in the query (`rvt-token`) or the path (`@token`).
    pub token: Option<String>,
    /// The creation input (`rvt-input`, base64 of CBOR; see `agentvm_protocol::decode_input`).
    pub input: Option<String>,
}

pub const DEFAULT_NAMESPACE: &str = "default";

pub fn parse(segment: &str, raw_query: Option<&str>) -> Result<Addressed, ApiError> {
    let params: Vec<(String, String)> =
        raw_query.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let rvt = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if params.iter().any(|(k, _)| k.starts_with("rvt-")) {
        if segment.is_empty() || segment.contains('@') {
            return Err(ApiError::invalid_request(format!("invalid actor name in gateway path: {segment:?}")));
        }
        let create = match rvt("rvt-method") {
            Some("getOrCreate") => true,
            Some("get") => false,
            Some(other) => {
                return Err(ApiError::invalid_request(format!(
                    "rvt-method must be `get` or `getOrCreate`, not {other:?}"
                )))
            }
            None => return Err(ApiError::invalid_request("rvt-method is required with rvt-* parameters")),
        };
        let namespace = rvt("rvt-namespace").filter(|n| !n.is_empty()).unwrap_or(DEFAULT_NAMESPACE).to_string();
        Ok(Addressed {
            target: Target::Name {
                namespace,
                name: segment.to_string(),
                key: keys::from_query(rvt("rvt-key")),
                create,
            },
            token: rvt("rvt-token").map(str::to_string),
            input: rvt("rvt-input").map(str::to_string),
        })
    } else {
        let (id, token) = match segment.split_once('@') {
            Some((id, token)) => (id, Some(token.to_string())),
            None => (segment, None),
        };
        if id.is_empty() {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "actor", "not_found", "no actor id in the gateway path"));
        }
        Ok(Addressed { target: Target::Id(id.to_string()), token, input: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_form_names_an_actor() {
        let a = parse(
            "vm",
            Some("rvt-namespace=ns1&rvt-method=getOrCreate&rvt-runner=default&rvt-key=a%2Fb%2Cc&rvt-crash-policy=sleep&rvt-token=t"),
        )
        .unwrap();
        assert_eq!(
            a.target,
            Target::Name {
                namespace: "ns1".into(),
                name: "vm".into(),
                key: vec!["a/b".into(), "c".into()],
                create: true
            }
        );
        assert_eq!(a.token.as_deref(), Some("t"));
        assert!(parse("vm", Some("rvt-method=destroy")).is_err());
        assert!(parse("vm", Some("rvt-namespace=x")).is_err());
    }

    #[test]
    fn id_form_with_token() {
        let a = parse("actor01@tok123", None).unwrap();
        assert_eq!(a.target, Target::Id("actor01".into()));
        assert_eq!(a.token.as_deref(), Some("tok123"));
        assert_eq!(parse("actor01", Some("other=1")).unwrap().token, None);
    }
}

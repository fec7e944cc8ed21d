//! The actor core stays transport-neutral: neither this crate nor anything it depends on
//! (directly or not, per the workspace's Cargo.lock) is a crate of a front end's transport: an
//! HTTP server framework or a WebSocket crate. Front ends such as `agentvm-server` bring those.
//!
//! An HTTP *client* is allowed below the core: `vmFetch` and preview URLs talk HTTP to servers
//! running inside VMs (`agentvm_vm::fetch`), which is a VM capability, not how clients reach
//! the core.

use std::collections::{BTreeMap, BTreeSet};

/// Crates that mean a front end's transport: HTTP server frameworks and WebSockets.
const FORBIDDEN: &[&str] = &["axum", "tower", "tower-http", "tungstenite", "tokio-tungstenite"];

fn forbidden(name: &str) -> bool {
    // `tower-service` is one trait, named in `hyper-util`'s lock entry (the HTTP client's
    // tokio adapter) because the server enables its service feature; it carries no transport.
    FORBIDDEN.contains(&name) || name.starts_with("axum-") || (name.starts_with("tower-") && name != "tower-service")
}

/// The names in this crate's own `[*dependencies]` tables: no HTTP or WebSocket crate at all.
#[test]
fn the_manifest_names_no_http_or_websocket_crate() {
    let manifest = include_str!("../Cargo.toml");
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line.trim_matches(|c| c == '[' || c == ']').ends_with("dependencies");
            continue;
        }
        if in_dependencies && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.']).next().unwrap_or("").trim();
            names.push(name.to_string());
        }
    }
    assert!(names.iter().any(|n| n == "agentvm-vm"), "the manifest parse found no dependencies: {names:?}");
    let http = |n: &str| forbidden(n) || ["hyper", "http", "http-body"].contains(&n) || n.starts_with("hyper-");
    let bad: Vec<&String> = names.iter().filter(|n| http(n)).collect();
    assert!(bad.is_empty(), "agentvm-actors depends on {bad:?}");
}

/// Everything reachable from `agentvm-actors` in Cargo.lock (normal and dev dependencies alike).
#[test]
fn no_dependency_reaches_an_http_or_websocket_crate() {
    let lock = include_str!("../../../Cargo.lock");
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let mut name = None;
        let mut deps = Vec::new();
        let mut in_deps = false;
        for line in package.lines().map(str::trim) {
            if let Some(value) = line.strip_prefix("name = ") {
                name = Some(value.trim_matches('"').to_string());
            } else if line.starts_with("dependencies = [") {
                in_deps = true;
            } else if in_deps && line == "]" {
                in_deps = false;
            } else if in_deps {
                // `"name"` or `"name version"` or `"name version (source)"`.
                let dep = line.trim_matches(|c| c == '"' || c == ',').split(' ').next().unwrap_or("");
                deps.push(dep.to_string());
            }
        }
        if let Some(name) = name {
            graph.entry(name).or_default().extend(deps);
        }
    }
    assert!(graph.contains_key("agentvm-actors"), "agentvm-actors is not in Cargo.lock");
    let mut seen = BTreeSet::new();
    let mut todo = vec!["agentvm-actors".to_string()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(graph.get(&name).into_iter().flatten().cloned());
        }
    }
    assert!(seen.contains("tokio") && seen.contains("agentvm-store"), "the walk missed known dependencies");
    let bad: Vec<&String> = seen.iter().filter(|n| forbidden(n)).collect();
    assert!(bad.is_empty(), "agentvm-actors reaches {bad:?}");
    // The server, by contrast, does reach them: the check would notice.
    assert!(graph.get("agentvm-server").is_some_and(|deps| deps.iter().any(|d| d == "axum")));
}

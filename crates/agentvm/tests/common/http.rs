//! HTTP actions on one VM of a test server, in JSON, over one pooled client.
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

use serde_json::{json, Value};

use super::server::TestServer;

pub struct Api<'a> {
    pub server: &'a TestServer,
    /// The actor name (`vm` unless made with [`Api::named`]).
    pub name: &'a str,
    pub key: &'a str,
    pub http: reqwest::Client,
}

impl<'a> Api<'a> {
    pub fn new(server: &'a TestServer, key: &'a str) -> Api<'a> {
        Api::named(server, "vm", key)
    }

    /// A VM of actor name `name` (a preset of the server's config file).
    pub fn named(server: &'a TestServer, name: &'a str, key: &'a str) -> Api<'a> {
        Api { server, name, key, http: reqwest::Client::new() }
    }

    /// The URL of action `name` on this VM.
    pub fn url(&self, name: &str) -> String {
        format!("{}/gateway/{}/action/{name}?rvt-method=getOrCreate&rvt-key={}", self.server.url, self.name, self.key)
    }

    /// An action's status and body.
    pub async fn call(&self, name: &str, args: Value) -> (u16, Value) {
        let response = self.http.post(self.url(name)).json(&json!({ "args": args })).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The output of an action that must succeed.
    pub async fn ok(&self, name: &str, args: Value) -> Value {
        let (status, body) = self.call(name, args).await;
        assert_eq!(status, 200, "{name} failed: {body}");
        body["output"].clone()
    }
}

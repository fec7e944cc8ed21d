//! `Client::from_env` (alone in its test binary: it changes the process environment).

use agentvm_client::testing::TestServer;
use agentvm_client::{Client, ExecOptions, DEFAULT_URL};

#[tokio::test]
async fn from_env_reads_url_and_token() {
    std::env::remove_var("AGENTVM_URL");
    std::env::remove_var("AGENTVM_TOKEN");
    assert_eq!(Client::from_env().url(), DEFAULT_URL);
    std::env::set_var("AGENTVM_URL", "  ");
    assert_eq!(Client::from_env().url(), DEFAULT_URL);

    let server = TestServer::start_with(&["--token", "from-env"]);
    std::env::set_var("AGENTVM_URL", format!("{}/", server.url()));
    let err = Client::from_env().vm("env").exec("true", ExecOptions::default()).await.unwrap_err();
    assert_eq!(err.api_code().as_deref(), Some("auth.unauthorized"));

    std::env::set_var("AGENTVM_TOKEN", "from-env");
    let client = Client::from_env();
    assert_eq!(client.url(), server.url());
    assert!(!format!("{client:?}").contains("from-env"), "the token stays out of Debug");
    assert_eq!(client.vm("env").exec("echo ok", ExecOptions::default()).await.unwrap().stdout, "ok\n");
    client.vm("env").connect().await.unwrap().close().await;

    // testing::server() points AGENTVM_URL at the server it starts.
    std::env::remove_var("AGENTVM_TOKEN");
    let other = agentvm_client::testing::server();
    assert_eq!(Client::from_env().url(), other.url());
    Client::from_env().health().await.unwrap();
}

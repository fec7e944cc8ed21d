//! The web inspector in a real browser: playwright-core (tests/browser, installed by
//! scripts/test) drives Debian's headless Chromium against a server started with `--token`.
//! The browser script (tests/browser/inspector.mjs) checks that without the token only a login
//! prompt shows, that with it the VM list shows the test's VM, that its terminal runs what is
//! typed (`echo hi-$RANDOM`), follows the window's size (`stty size`) and takes Ctrl-C, that a
//! permission request of the scripted ACP test agent is answered from the page and the file its
//! tool writes shows in the file browser, that cron jobs show, that destroying asks first, and
//! that the other tabs and a narrow window work. Screenshots of each page are saved under
//! `target/inspector-screenshots/`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::server::TestServer;
use serde_json::json;

const TOKEN: &str = "inspector-test-token";
const AGENT: &str = include_str!("fixtures/acp-test-agent.mjs");

/// Calls an action over HTTP with the token; its output.
async fn call(server: &TestServer, key: &str, name: &str, args: serde_json::Value) -> serde_json::Value {
    let url = format!("{}/gateway/vm/action/{name}?rvt-method=getOrCreate&rvt-key={key}", server.url);
    let response = reqwest::Client::new()
        .post(url)
        .header("x-rivet-token", TOKEN)
        .json(&json!({"args": args}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{name}: {body}");
    body["output"].clone()
}

fn chromium() -> PathBuf {
    // Debian's /usr/bin/chromium is a shell wrapper; the browser itself is here.
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is not installed: `apt-get install chromium` (.ci/run installs it)")
}

#[test]
fn the_inspector_in_a_browser_logs_in_lists_vms_and_drives_a_terminal() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in {} (scripts/test does)",
        browser_dir.display()
    );
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/inspector-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    write!(
        config,
        "[actors.vm.sessions]\npermission_timeout_seconds = 300\n\n[agents.test]\ncommand = [\"node\", \"/home/user/acp-test-agent.mjs\"]\n"
    )
    .unwrap();
    let server = TestServer::start_with(&["--token", TOKEN, "--config", config.path().to_str().unwrap()]);
    let (key, doomed) = ("inspected-vm", "doomed-vm");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A VM with a cron job and an agent session whose prompt waits for a permission answer
    // (given from the page), and another VM to destroy from the page.
    let session = runtime.block_on(async {
        call(&server, doomed, "exec", json!(["true"])).await;
        call(&server, key, "writeFile", json!(["/home/user/acp-test-agent.mjs", AGENT])).await;
        let job =
            json!({"id": "nightly", "schedule": "0 3 * * *", "action": {"type": "exec", "command": "echo nightly"}});
        call(&server, key, "scheduleCron", json!([job])).await;
        let session = call(&server, key, "createSession", json!(["test", {"cwd": "/home/user"}])).await;
        session["sessionId"].as_str().unwrap().to_string()
    });
    let url = format!("{}/gateway/vm/action/sendPrompt?rvt-method=get&rvt-key={key}", server.url);
    let prompt = runtime.spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .header("x-rivet-token", TOKEN)
            .json(&json!({"args": [session, "hello"]}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
    });
    let output = std::process::Command::new("node")
        .arg(browser_dir.join("inspector.mjs"))
        .current_dir(&browser_dir)
        .env("BASE", &server.url)
        .env("TOKEN", TOKEN)
        .env("KEY", key)
        .env("DOOMED", doomed)
        .env("CHROMIUM", chromium())
        .env("SHOTS", &shots)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(r#""done":true"#),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The prompt the page's answer let through ended normally.
    let (status, body) = runtime.block_on(prompt).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"]["response"]["result"]["stopReason"], "end_turn", "{body}");
    for shot in [
        "login.png",
        "vms.png",
        "terminal.png",
        "terminal-resized.png",
        "session-permission.png",
        "session.png",
        "files.png",
        "cron.png",
        "processes.png",
        "events.png",
        "vms-narrow.png",
        "destroy-confirm.png",
    ] {
        assert!(shots.join(shot).is_file(), "no screenshot {shot}");
    }
}

#[test]
fn the_inspector_files_are_served_with_their_types_and_a_strict_policy() {
    let server = TestServer::start_with(&["--token", TOKEN]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        for (path, kind) in [
            ("/", "text/html"),
            ("/inspector/app.js", "text/javascript"),
            ("/inspector/vendor/xterm.mjs", "text/javascript"),
            ("/inspector/vendor/xterm.css", "text/css"),
        ] {
            let response = http.get(format!("{}{path}", server.url)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let headers = response.headers();
            assert!(headers["content-type"].to_str().unwrap().starts_with(kind), "{path}: {headers:?}");
            assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'self'"), "{path}");
            assert_eq!(headers["x-content-type-options"], "nosniff");
        }
        let missing = http.get(format!("{}/inspector/../Cargo.toml", server.url)).send().await.unwrap();
        assert_eq!(missing.status(), 404);
        // The files need no token; the VM list does.
        let refused = http.get(format!("{}/inspector/api/vms", server.url)).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        let listed =
            http.get(format!("{}/inspector/api/vms", server.url)).header("x-rivet-token", TOKEN).send().await.unwrap();
        assert_eq!(listed.status(), 200);
        assert_eq!(listed.json::<serde_json::Value>().await.unwrap(), json!([]));
        // A foreign page cannot read the list, even with the token.
        let foreign = http
            .get(format!("{}/inspector/api/vms", server.url))
            .header("x-rivet-token", TOKEN)
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), 403);
    });
}

//! # agentvm-inspector
//!
//! The web inspector `agentvm serve` shows at `/`: static pages (`web/`: plain ES modules, no
//! build step of their own) and the front-end libraries they use (xterm.js and its fit add-on,
//! fetched from npm at the pinned versions by `build.rs`), all built into the binary. The pages
//! talk to the server through its ordinary API — HTTP actions and WebSocket connections — with
//! the same authentication as any client; this crate only holds the bytes.
//!
//! [`asset`] answers a path under `/inspector/`.

/// A file of the inspector.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub body: &'static [u8],
    pub content_type: &'static str,
}

macro_rules! web {
    ($file:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $file)).as_slice()
    };
}

macro_rules! vendor {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/vendor/", $file)).as_slice()
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The page every route of the inspector starts from.
pub const INDEX: Asset = Asset { body: web!("index.html"), content_type: HTML };

/// The file at `path` (relative to `/inspector/`), if there is one.
pub fn asset(path: &str) -> Option<Asset> {
    let (body, content_type) = match path {
        "" | "index.html" => return Some(INDEX),
        "app.js" => (web!("app.js"), JS),
        "api.js" => (web!("api.js"), JS),
        "connection.js" => (web!("connection.js"), JS),
        "dom.js" => (web!("dom.js"), JS),
        "style.css" => (web!("style.css"), CSS),
        "views/login.js" => (web!("views/login.js"), JS),
        "views/list.js" => (web!("views/list.js"), JS),
        "views/vm.js" => (web!("views/vm.js"), JS),
        "views/terminal.js" => (web!("views/terminal.js"), JS),
        "views/processes.js" => (web!("views/processes.js"), JS),
        "views/events.js" => (web!("views/events.js"), JS),
        "views/files.js" => (web!("views/files.js"), JS),
        "views/sessions.js" => (web!("views/sessions.js"), JS),
        "views/cron.js" => (web!("views/cron.js"), JS),
        "vendor/xterm.mjs" => (vendor!("xterm.mjs"), JS),
        "vendor/xterm.css" => (vendor!("xterm.css"), CSS),
        "vendor/addon-fit.mjs" => (vendor!("addon-fit.mjs"), JS),
        "vendor/xterm.LICENSE" => (vendor!("xterm.LICENSE"), TEXT),
        "vendor/addon-fit.LICENSE" => (vendor!("addon-fit.LICENSE"), TEXT),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_module_and_library_is_built_in() {
        for path in ["", "app.js", "views/terminal.js", "vendor/xterm.mjs", "vendor/addon-fit.mjs", "vendor/xterm.css"]
        {
            let asset = asset(path).unwrap_or_else(|| panic!("{path} missing"));
            assert!(!asset.body.is_empty(), "{path} is empty");
        }
        assert!(asset("../Cargo.toml").is_none() && asset("nope.js").is_none());
        // Every module a page imports is served.
        for file in
            ["app.js", "views/vm.js", "views/terminal.js", "views/list.js", "views/events.js", "views/processes.js"]
        {
            let text = std::str::from_utf8(asset(file).unwrap().body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let target = line.rsplit(" from ").next().unwrap().trim_matches(|c| c == '"' || c == ';' || c == '\'');
                let base = if file.contains('/') { "views/" } else { "" };
                let resolved = if let Some(rest) = target.strip_prefix("/inspector/") {
                    rest.to_string()
                } else if let Some(rest) = target.strip_prefix("../") {
                    rest.to_string()
                } else {
                    format!("{base}{}", target.trim_start_matches("./"))
                };
                assert!(asset(&resolved).is_some(), "{file} imports {target} ({resolved}), which is not served");
            }
        }
    }
}

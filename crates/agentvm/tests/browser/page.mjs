// A web page driving agentvm from headless Chromium (tests/escape_api.rs). The test bundles this
// file with the real rivetkit browser clients (esbuild; both installed in clients/node/v*),
// serves it from its own loopback HTTP server on another port (so the page is cross-origin to
// agentvm), and reads what happened from the JSON this page POSTs back to `/report`.
//
// Query parameters: `server` (agentvm's URL), `key` (the VM to use), `mode`: `allowed` (the
// page's origin is in --allow-origin: everything must work) or `foreign` (it is not: every
// attempt must fail, and the test checks on the server that none of them ran).
//
// Stateless actions use rivetkit 2.2.1: 2.3.x's browser client streams request bodies
// (`duplex: "half"`), which Chrome sends only over HTTP/2, so `handle.exec()` from 2.3.x fails
// in Chrome against any plain-http server (ERR_ALPN_NEGOTIATION_FAILED) before reaching it.
import { createClient as createClient23 } from "../../../../clients/node/v2.3.19/node_modules/rivetkit/dist/browser/client.js";
import { createClient as createClient22 } from "../../../../clients/node/v2.2.1/node_modules/rivetkit/dist/browser/client.js";

const params = new URLSearchParams(location.search);
const server = params.get("server");
const key = params.get("key");
const mode = params.get("mode");
const results = {};

function withTimeout(promise, ms, what) {
	return Promise.race([
		promise,
		new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms)),
	]);
}

async function step(name, run, ms = 15000) {
	try {
		results[name] = { ok: true, value: await withTimeout(run(), ms, name) };
	} catch (error) {
		results[name] = { ok: false, error: String(error?.message ?? error) };
	}
}

const actionUrl = (name) =>
	`${server}/gateway/vm/action/${name}?rvt-namespace=default&rvt-method=getOrCreate&rvt-key=${encodeURIComponent(key)}`;

// A raw WebSocket to the gateway: resolves with the first frame, rejects if it closes first.
function openSocket() {
	return new Promise((resolve, reject) => {
		const url = `${server.replace("http", "ws")}/gateway/vm/connect?rvt-namespace=default&rvt-method=getOrCreate&rvt-key=${encodeURIComponent(key)}`;
		const socket = new WebSocket(url, ["rivet", "rivet_encoding.json"]);
		socket.onmessage = (event) => {
			resolve(JSON.parse(event.data).body.tag);
			socket.close();
		};
		socket.onclose = (event) => reject(new Error(`closed before any frame (code ${event.code})`));
	});
}

if (mode === "allowed") {
	for (const encoding of ["json", "bare", "cbor"]) {
		await step(`rivetkit_2.2.1_exec_${encoding}`, async () => {
			const client = createClient22({ endpoint: server, encoding });
			const result = await client.vm.getOrCreate([key]).exec(`echo browser-${encoding}`);
			return result.stdout;
		});
	}
	for (const [version, createClient] of [["2.3.19", createClient23], ["2.2.1", createClient22]]) {
		await step(`rivetkit_${version}_connection`, async () => {
			const client = createClient({ endpoint: server, encoding: "bare" });
			const conn = client.vm.getOrCreate([key]).connect();
			try {
				return (await conn.exec("echo over-websocket")).stdout;
			} finally {
				await conn.dispose();
			}
		});
	}
	await step("raw_websocket", openSocket);
	// Even an allowed page must not send a body a browser sends without a preflight; the
	// refusal carries CORS headers, so the page can read why.
	await step("text_plain_from_allowed_page", async () => {
		const response = await fetch(actionUrl("exec"), {
			method: "POST",
			headers: { "content-type": "text/plain" },
			body: JSON.stringify({ args: ["echo should-not-run"] }),
		});
		return { status: response.status, body: await response.json() };
	});
} else {
	// What a malicious page would try, all at once. None of these may reach a VM (rivetkit
	// retries a refused metadata request for ever: a few seconds show it got nowhere).
	const attempt = (name, run) => step(name, run, 4000);
	await Promise.all([
		attempt("rivetkit_exec", async () => {
			const client = createClient22({ endpoint: server, encoding: "json" });
			return (await client.vm.getOrCreate([key]).exec("touch /home/user/pwned-rivetkit")).stdout;
		}),
		attempt("rivetkit_connection", async () => {
			const client = createClient23({ endpoint: server, encoding: "json" });
			const conn = client.vm.getOrCreate([key]).connect();
			try {
				return (await conn.exec("touch /home/user/pwned-connection")).stdout;
			} finally {
				await conn.dispose();
			}
		}),
		// mode "no-cors": the browser sends these without asking and hides the answer (opaque).
		attempt("simple_text_plain_post", async () => {
			const response = await fetch(actionUrl("exec"), {
				method: "POST",
				mode: "no-cors",
				headers: { "content-type": "text/plain" },
				body: JSON.stringify({ args: ["touch /home/user/pwned-text-plain"] }),
			});
			return response.type;
		}),
		attempt("simple_form_post", async () => {
			const form = new URLSearchParams({ args: "touch /home/user/pwned-form" });
			return (await fetch(actionUrl("exec"), { method: "POST", mode: "no-cors", body: form })).type;
		}),
		attempt("json_post_with_preflight", async () => {
			const response = await fetch(actionUrl("exec"), {
				method: "POST",
				headers: { "content-type": "application/json" },
				body: JSON.stringify({ args: ["touch /home/user/pwned-json"] }),
			});
			return response.status;
		}),
		attempt("read_actor_list", async () => (await fetch(`${server}/actors?namespace=default&name=vm`)).status),
		attempt("raw_websocket", openSocket),
	]);
}

await fetch("/report", { method: "POST", body: JSON.stringify({ mode, results }) });

// Preview scenario: vmFetch and signed preview URLs through the real client. A dev server
// (`python3 -m http.server`) runs in the VM; `vmFetch` reaches it, `createSignedPreviewUrl` makes
// a URL that `handle.fetch("/fetch/<token>/…")` (the gateway's raw request path) and plain
// `fetch` of `<endpoint><path>/…` both open, and `expireSignedPreviewUrl` closes it (403).
//
// Does NOT import rivetkit: clients/node/<version>/run.mjs passes `createClient` in.

import assert from "node:assert/strict";
import { check, done, expectReject, installGuards, normalizeOptions, waitFor } from "./harness.mjs";

export async function run(options) {
	installGuards({ timeoutMs: Number(process.env.TIMEOUT_MS) || 60000 });
	const { endpoint, encoding, key } = normalizeOptions(options);
	const client = options.createClient({ endpoint, encoding });
	const vm = client.vm.getOrCreate([`${key}-preview`]);
	const text = (bytes) => new TextDecoder().decode(bytes);

	await check("vm_fetch_reaches_a_server_in_the_vm", async () => {
		await vm.writeFile("/home/user/hi.txt", "hi from the vm\n");
		await vm.spawn("python3", ["-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/home/user"]);
		const r = await waitFor(() => vm.vmFetch(8000, "/hi.txt").catch(() => null), { ms: 20000, what: "the dev server" });
		assert.equal(r.status, 200);
		assert.equal(r.statusText, "OK");
		assert.ok(r.body instanceof Uint8Array, "body is a Uint8Array");
		assert.equal(text(r.body), "hi from the vm\n");
		assert.equal(r.headers["content-length"], "15");
		const posted = await vm.vmFetch(8000, "/", { method: "POST", headers: { "x-a": "1" }, body: new Uint8Array([1, 2]) });
		assert.equal(posted.status, 501);
	});

	let url;
	await check("a_preview_url_opens_through_handle_fetch_and_plain_fetch", async () => {
		url = await vm.createSignedPreviewUrl(8000);
		assert.match(url.token, /^[a-z0-9]{32}$/);
		assert.equal(url.path, `/request/fetch/${url.token}`);
		assert.equal(url.port, 8000);
		assert.ok(url.expiresAt > Date.now() + 3500_000 && url.expiresAt <= Date.now() + 3600_000, `${url.expiresAt}`);
		const viaHandle = await vm.fetch(`/fetch/${url.token}/hi.txt`);
		assert.equal(viaHandle.status, 200);
		assert.equal(await viaHandle.text(), "hi from the vm\n");
		assert.equal(viaHandle.headers.get("access-control-allow-origin"), "*");
		const plain = await fetch(`${endpoint}${url.path}/hi.txt`);
		assert.equal(await plain.text(), "hi from the vm\n");
		const other = await vm.fetch("/elsewhere");
		assert.equal(other.status, 404);
	});

	await check("bad_arguments_and_expiry", async () => {
		const e = await expectReject(vm.createSignedPreviewUrl(8000, 0), "expiresInSeconds 0");
		assert.match(e.message, /expiresInSeconds must be between 1 and 86400/);
		await expectReject(vm.vmFetch(8000, "no-slash"), "a url without /");
		assert.equal(await vm.expireSignedPreviewUrl(url.token), undefined);
		assert.equal((await vm.fetch(`/fetch/${url.token}/hi.txt`)).status, 403);
		assert.equal((await fetch(`${endpoint}${url.path}/hi.txt`)).status, 403);
	});

	done();
}

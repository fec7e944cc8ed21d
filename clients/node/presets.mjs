// Presets scenario: the server runs with a config file defining `vm` (no network) and `coder`
// (egress allow-list); `createWithInput` may set the environment but never the network policy.
//
// Does NOT import rivetkit: clients/node/<version>/run.mjs passes `createClient` in.

import assert from "node:assert/strict";
import { check, done, expectReject, installGuards, normalizeOptions } from "./harness.mjs";

export async function run(options) {
	installGuards({ timeoutMs: Number(process.env.TIMEOUT_MS) || 60000 });
	const { endpoint, encoding, key } = normalizeOptions(options);
	const client = options.createClient({ endpoint, encoding });

	await check("input_cannot_open_the_network", async () => {
		for (const [name, input] of [
			["vm", { network: { mode: "open" } }],
			["vm", { network: { mode: "allow", allow: ["*:*"] } }],
			["coder", { network: { allow: ["evil.example:443"] } }],
			["coder", { env: { A: "1" }, network: { mode: "none" } }],
		]) {
			const handle = client[name].getOrCreate([`${key}-${name}-refused`], { createWithInput: input });
			const e = await expectReject(handle.exec("echo should-not-run"), `${name} with ${JSON.stringify(input)}`);
			assert.equal(e.code, "invalid_input", `${name}: ${e.message}`);
			assert.match(e.message, /network policy/);
		}
	});

	await check("input_sets_env_within_the_preset", async () => {
		const vm = client.vm.getOrCreate([`${key}-vm`], { createWithInput: { env: { GREETING: "hello-from-input" } } });
		const r = await vm.exec('echo "$GREETING|${HTTP_PROXY:-no-proxy}"');
		assert.equal(r.stdout, "hello-from-input|no-proxy\n");
		const coder = client.coder.getOrCreate([`${key}-coder`], { createWithInput: { env: { GREETING: "hi" } } });
		const c = await coder.exec('echo "$GREETING|$HTTP_PROXY"');
		assert.equal(c.stdout, "hi|http://127.0.0.1:3128\n");
	});

	await check("limits_are_not_client_settable_here", async () => {
		const handle = client.vm.getOrCreate([`${key}-limits`], { createWithInput: { limits: { memoryBytes: 1 << 40 } } });
		const e = await expectReject(handle.exec("true"), "raising limits");
		assert.equal(e.code, "invalid_input");
	});

	await check("unknown_actor_names_are_refused", async () => {
		const e = await expectReject(client.nope.getOrCreate([key]).exec("true"), "an actor name the config does not define");
		assert.equal(e.code, "unknown_name");
	});
	done();
}

// Subscribe-first scenario: the pattern the seed page teaches ("Subscribe to processOutput and
// processExit before calling spawn") with the action over HTTP, not over the connection:
//
//   const conn = agent.connect(); conn.on("processOutput", …); conn.on("processExit", …);
//   const { pid } = await agent.spawn(…);
//
// `connect()` returns at once and the subscriptions leave only once the socket is open, while
// the spawn goes out at once: the server must still deliver the process's first output and its
// exit, each exactly once. ROUNDS (default 200) fresh VMs per pattern: "readme" (an exec first,
// as the README example does) and "seed" (the connection is the VM's first contact).
//
// Does NOT import rivetkit: clients/node/<version>/run.mjs passes `createClient` in.

import assert from "node:assert/strict";
import { check, done, installGuards, normalizeOptions, withTimeout } from "./harness.mjs";

async function once(client, key, pattern) {
	const agent = client.vm.getOrCreate([key]);
	if (pattern === "readme") {
		const result = await agent.exec("echo hello && ls /home/user");
		assert.equal(result.exitCode, 0);
	}
	const conn = agent.connect();
	const seen = [];
	let exited;
	const exit = new Promise((resolve) => {
		exited = resolve;
	});
	conn.on("processOutput", (e) => seen.push({ pid: e.pid, stream: e.stream, text: new TextDecoder().decode(e.data) }));
	conn.on("processExit", (e) => {
		seen.push({ pid: e.pid, exitCode: e.exitCode });
		exited();
	});
	try {
		const { pid } = await agent.spawn("sh", ["-c", "echo first; echo second >&2"]);
		await withTimeout(exit, 10000, `processExit of ${pid} (seen: ${JSON.stringify(seen)})`);
		const mine = seen.filter((e) => e.pid === pid);
		const out = mine.filter((e) => e.stream === "stdout").map((e) => e.text).join("");
		const err = mine.filter((e) => e.stream === "stderr").map((e) => e.text).join("");
		const exits = mine.filter((e) => "exitCode" in e);
		assert.equal(out, "first\n", `stdout of ${pid}: ${JSON.stringify(seen)}`);
		assert.equal(err, "second\n", `stderr of ${pid}: ${JSON.stringify(seen)}`);
		assert.equal(exits.length, 1, `exits of ${pid}: ${JSON.stringify(seen)}`);
		assert.equal(exits[0].exitCode, 0);
		assert.ok("exitCode" in mine[mine.length - 1], `the exit comes last: ${JSON.stringify(seen)}`);
	} finally {
		await conn.dispose();
	}
}

export async function run(options) {
	installGuards({ timeoutMs: Number(process.env.TIMEOUT_MS) || 600000 });
	const { endpoint, encoding, key } = normalizeOptions(options);
	const rounds = Number(process.env.ROUNDS) || 200;
	const client = options.createClient({ endpoint, encoding });
	for (const pattern of ["readme", "seed"]) {
		await check(`subscribe_first_${pattern}`, async () => {
			for (let i = 0; i < rounds; i++) {
				await once(client, `${key}-${pattern}-${i}`, pattern);
			}
			return { rounds };
		});
	}
	done();
}

// Sessions scenario: the scripted ACP test agent (declared by the server's config as agent
// `test`) driven through the real client: createSession, the sessionEvent stream, a
// permissionRequest answered with respondPermission("once"), the sendPrompt result, the agent's
// file in the VM, and getSequencedEvents / getSessionEvents returning the same events in order.
//
// Does NOT import rivetkit: clients/node/<version>/run.mjs passes `createClient` in.

import assert from "node:assert/strict";
import fs from "node:fs";
import { check, connReady, done, installGuards, normalizeOptions } from "./harness.mjs";

const AGENT = fs.readFileSync(new URL("../../crates/agentvm/tests/fixtures/acp-test-agent.mjs", import.meta.url), "utf8");

export async function run(options) {
	installGuards({ timeoutMs: Number(process.env.TIMEOUT_MS) || 60000 });
	const { endpoint, encoding, key } = normalizeOptions(options);
	const client = options.createClient({ endpoint, encoding });
	const agent = client.vm.getOrCreate([key]);
	await agent.writeFile("/home/user/acp-test-agent.mjs", AGENT);

	const conn = agent.connect();
	const updates = [];
	const permissions = [];
	conn.on("sessionEvent", (e) => updates.push(e));
	conn.on("permissionRequest", (e) => {
		permissions.push(e);
		conn.respondPermission(e.sessionId, e.request.permissionId, "once").catch((err) => permissions.push({ err }));
	});
	await connReady(conn);

	const session = await check("create_session", async () => {
		const s = await conn.createSession("test", { cwd: "/home/user" });
		assert.equal(s.agentType, "test");
		assert.equal(typeof s.sessionId, "string");
		return s;
	});

	await check("prompt_with_permission", async () => {
		const result = await conn.sendPrompt(session.sessionId, "hello");
		assert.equal(result.response.result.stopReason, "end_turn");
		assert.match(result.text, /The terminal said: done/);
		assert.equal(permissions.length, 1, JSON.stringify(permissions));
		assert.equal(permissions[0].sessionId, session.sessionId);
		assert.ok(permissions[0].request.permissionId);
		const kinds = updates.filter((u) => u.sessionId === session.sessionId).map((u) => u.event.params?.update?.sessionUpdate).filter(Boolean);
		assert.deepEqual(kinds.slice(0, 5), ["agent_message_chunk", "agent_message_chunk", "agent_message_chunk", "plan", "tool_call"]);
		const file = new TextDecoder().decode(await agent.readFile("/home/user/from-agent.txt"));
		assert.ok(file.length > 0);
		return { updates: kinds.length };
	});

	await check("replays_agree", async () => {
		const persisted = await agent.getSessionEvents(session.sessionId);
		const sequenced = await agent.getSequencedEvents(session.sessionId, { since: 1 });
		assert.equal(sequenced.length, persisted.length - 2);
		sequenced.forEach((e, i) => {
			assert.equal(e.sequenceNumber, persisted[i + 2].seq);
			assert.deepEqual(e.notification, persisted[i + 2].event);
		});
		// Every live sessionEvent is in the transcript, in the same order.
		const live = updates.filter((u) => u.sessionId === session.sessionId).map((u) => JSON.stringify(u.event));
		const stored = persisted.map((e) => JSON.stringify(e.event));
		let at = 0;
		for (const event of live) {
			at = stored.indexOf(event, at);
			assert.ok(at >= 0, `live event not in the transcript in order: ${event}`);
			at += 1;
		}
		return { persisted: persisted.length };
	});

	await conn.closeSession(session.sessionId);
	await conn.dispose();
	done();
}

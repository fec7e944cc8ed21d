// Multiplayer scenario: two independent clients connected to the same VM key both receive the
// same processOutput/processExit broadcast of a spawn; a third client connected to a different key
// receives none of it (and vice versa).
//
// Does NOT import rivetkit: clients/node/<version>/run.mjs passes `createClient` in.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
	EventLog,
	check,
	connReady,
	disposeBounded,
	done,
	installGuards,
	normalizeOptions,
	setCurrentCheck,
	sleep,
	waitFor,
	withTimeout,
} from "./harness.mjs";

const EVENT_WAIT_MS = 10000;
const QUIET_MS = 500; // how long a non-recipient must stay silent after the processExit

/** [{stream, bytes[]}...] of one pid, for exact comparison between receivers. */
function chunksOf(log, pid) {
	return log
		.of("processOutput", (p) => p?.pid === pid)
		.map((r) => ({ stream: r.payload.stream, bytes: Array.from(r.payload.data ?? []) }));
}

function waitExit(log, pid) {
	return waitFor(() => log.of("processExit", (p) => p?.pid === pid)[0], {
		ms: EVENT_WAIT_MS,
		what: `processExit for pid ${pid} on ${log.label}`,
	});
}

export async function run(options) {
	installGuards({ timeoutMs: options.timeoutMs });
	const { endpoint, encoding, key } = normalizeOptions(options);
	const { createClient } = options;
	const otherKey = options.otherKey || `${key}-other`;

	const clientA = createClient({ endpoint, encoding });
	const clientB = createClient({ endpoint, encoding });
	const clientC = createClient({ endpoint, encoding });
	const agentA = clientA.vm.getOrCreate([key]);
	const agentC = clientC.vm.getOrCreate([otherKey]);

	const connA = agentA.connect();
	const connB = clientB.vm.getOrCreate([key]).connect();
	const connC = agentC.connect();
	const names = ["processOutput", "processExit"];
	const logA = new EventLog(connA, names, "A");
	const logB = new EventLog(connB, names, "B");
	const logC = new EventLog(connC, names, "C");

	await check("connect_all", async () => {
		await withTimeout(Promise.all([connA, connB, connC].map(connReady)), 15000, "three connections to open");
		// Barrier: make sure each server-side connection has processed its subscriptions.
		await Promise.all([connA, connB, connC].map((c) => c.listProcesses()));
		assert.ok(connA.actorId, "connA.actorId is set after Init");
		assert.equal(connB.actorId, connA.actorId, "same key -> same actor");
		assert.notEqual(connC.actorId, connA.actorId, "different key -> different actor");
		assert.notEqual(connA.connId, connB.connId, "two clients -> two connections");
		return { key, otherKey, actorA: connA.actorId, actorB: connB.actorId, actorC: connC.actorId };
	});

	await check("broadcast_same_key", async () => {
		const token = randomBytes(6).toString("hex");
		const { pid } = await agentA.spawn("sh", ["-c", `echo mp-${token}; echo mp-err-${token} >&2; exit 5`]);
		assert.equal(typeof pid, "number");
		const [exitA, exitB] = await Promise.all([waitExit(logA, pid), waitExit(logB, pid)]);
		await sleep(QUIET_MS);
		assert.equal(logA.text(pid, "stdout"), `mp-${token}\n`, "A stdout");
		assert.equal(logA.text(pid, "stderr"), `mp-err-${token}\n`, "A stderr");
		assert.deepEqual(chunksOf(logB, pid), chunksOf(logA, pid), "B received exactly A's processOutput chunks");
		assert.equal(exitA.payload.exitCode, 5);
		assert.deepEqual(exitB.payload, exitA.payload, "same processExit payload");
		return { pid, chunks: chunksOf(logA, pid).length };
	});

	await check("isolation_other_key", async () => {
		assert.equal(logC.size, 0, `client C (key ${otherKey}) got ${logC.size} events: ${JSON.stringify(logC.records.map((r) => r.payload))}`);
		return { eventsOnC: logC.size };
	});

	await check("isolation_reverse", async () => {
		const beforeA = logA.size;
		const beforeB = logB.size;
		const token = randomBytes(6).toString("hex");
		const { pid } = await connC.spawn("sh", ["-c", `echo other-${token}`]);
		await waitExit(logC, pid);
		await sleep(QUIET_MS);
		assert.equal(logC.text(pid, "stdout"), `other-${token}\n`, "C stdout");
		assert.equal(logA.size, beforeA, "client A must not see events of the other key");
		assert.equal(logB.size, beforeB, "client B must not see events of the other key");
		return { pid };
	});

	setCurrentCheck("dispose");
	for (const l of [logA, logB, logC]) l.unsubscribe();
	await disposeBounded([connA, connB, connC, clientA, clientB, clientC]);
	done();
}

// Scenario "bulk": one spawned process writes BYTES bytes as fast as it can; every byte must
// arrive through `processOutput`, in order, followed by the process's `processExit` with code 0.
// Used by crates/agentvm/tests/bulk_output.rs (1 GiB) and by the throughput benchmark
// (crates/agentvm/benches/vm.rs).
//
// The subscriptions are in place before the spawn (registered on the connection, then a
// round trip as a barrier); the spawn goes over the same connection (`conn.spawn`). Bytes are
// checked as they arrive, never kept: with PATTERN=line the process is
// `yes <LINE> | head -c BYTES` and every byte must match LINE + "\n" repeated; with
// PATTERN=zero it is `head -c BYTES /dev/zero` and every byte must be 0. A `streamError` event
// (the server skipped events for this connection) fails the run with its payload.
// ALLOW_LOSS=1 (for the benchmark) only counts: lost bytes and `streamError` events are
// reported in the summary instead of failing the run.
//
// Prints {"ok":"bulk", bytes, chunks, streamErrors, exitCode, ms, mbPerSec} (ms from the spawn
// call to the processExit event; MB = 10^6 bytes), then {"done":true}.
//
// Does NOT import rivetkit: clients/node/<version>/run.mjs passes `createClient` in.

import { check, connReady, disposeBounded, done, fail, installGuards, normalizeOptions, withTimeout } from "./harness.mjs";

/** The repeated line of PATTERN=line: 64 characters and "\n", a period of 65 bytes. */
const LINE = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/";

/** Checks a byte stream against a periodic pattern chunk by chunk, without keeping it. */
class PatternCheck {
	constructor(period) {
		this.period = period;
		// The period repeated, long enough that any chunk up to 1 MiB compares with one memcmp.
		const repeats = Math.ceil((1 << 20) / period.length) + 1;
		this.reference = Buffer.concat(Array.from({ length: repeats }, () => period));
		this.offset = 0;
	}

	/** Throws at the first byte that differs from the pattern. */
	feed(data) {
		let chunk = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
		while (chunk.length > 0) {
			const phase = this.offset % this.period.length;
			const n = Math.min(chunk.length, this.reference.length - phase);
			if (!chunk.subarray(0, n).equals(this.reference.subarray(phase, phase + n))) {
				for (let i = 0; i < n; i++) {
					if (chunk[i] !== this.reference[phase + i]) {
						throw new Error(
							`byte ${this.offset + i} is ${chunk[i]}, expected ${this.reference[phase + i]} (stream out of order or bytes lost)`,
						);
					}
				}
			}
			this.offset += n;
			chunk = chunk.subarray(n);
		}
	}
}

export async function run(options) {
	installGuards({ timeoutMs: options.timeoutMs });
	const { endpoint, encoding, key } = normalizeOptions(options);
	const total = Number(process.env.BYTES ?? 1 << 30);
	const pattern = process.env.PATTERN || "line";
	const allowLoss = process.env.ALLOW_LOSS === "1";
	if (!Number.isSafeInteger(total) || total < 0) fail("config", new Error(`bad BYTES ${process.env.BYTES}`));
	if (pattern !== "zero" && pattern !== "line") fail("config", new Error(`unknown PATTERN ${pattern}`));
	const [command, period] =
		pattern === "zero"
			? [`head -c ${total} /dev/zero`, Buffer.alloc(1)]
			: [`yes ${LINE} | head -c ${total}`, Buffer.from(`${LINE}\n`)];

	const client = options.createClient({ endpoint, encoding });
	const conn = client.vm.getOrCreate([key]).connect();
	const checker = new PatternCheck(period);
	let chunks = 0;
	let streamErrors = 0;
	let pid;
	let outputPid;
	let exit;
	let exited;
	const exitSeen = new Promise((resolve) => {
		exited = resolve;
	});
	conn.on("processOutput", (event) => {
		try {
			if (outputPid === undefined) outputPid = event.pid;
			if (event.pid !== outputPid) throw new Error(`output of a second pid ${event.pid} (first ${outputPid})`);
			if (event.stream !== "stdout") throw new Error(`output on ${event.stream}`);
			if (exit) throw new Error("processOutput after processExit");
			if (allowLoss) checker.offset += event.data.byteLength;
			else checker.feed(event.data);
			chunks += 1;
		} catch (e) {
			fail("bulk", e, { received: checker.offset, chunks });
		}
	});
	conn.on("processExit", (event) => {
		exit = { ...event, at: performance.now() };
		exited();
	});
	conn.on("streamError", (event) => {
		streamErrors += 1;
		if (!allowLoss) {
			fail("bulk", new Error("streamError event"), { streamError: event, received: checker.offset, chunks });
		}
	});

	await check("connect", async () => {
		await withTimeout(connReady(conn), 15000, "the connection to open");
		// Barrier: the server handles a connection's messages in order, so once an action sent
		// after the subscriptions is answered, they are in place.
		await conn.listProcesses();
	});

	await check("bulk", async () => {
		const started = performance.now();
		({ pid } = await conn.spawn("sh", ["-c", command]));
		await exitSeen;
		const ms = exit.at - started;
		if (outputPid !== undefined && outputPid !== pid) throw new Error(`output came from pid ${outputPid}, spawned ${pid}`);
		if (exit.pid !== pid) throw new Error(`processExit for pid ${exit.pid}, spawned ${pid}`);
		if (exit.exitCode !== 0) throw new Error(`exit code ${exit.exitCode}`);
		if (checker.offset !== total && !allowLoss) {
			throw new Error(`received ${checker.offset} of ${total} bytes (${chunks} chunks) before processExit`);
		}
		return {
			bytes: checker.offset,
			chunks,
			streamErrors,
			exitCode: exit.exitCode,
			ms: Math.round(ms),
			mbPerSec: Math.round(checker.offset / 1000 / ms),
		};
	});

	await disposeBounded([conn, client]);
	done();
}

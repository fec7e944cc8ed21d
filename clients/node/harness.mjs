// Shared test harness for the agentvm Node client suites.
//
// This module must NOT import rivetkit: each clients/node/<version>/run.mjs imports
// `createClient` from its own node_modules and passes it in.
//
// Output contract (stdout carries ONLY these JSON lines, one per line):
//   {"ok":"<check>", ...details}       a check passed
//   {"warn":"<what>", ...details}      something noteworthy that is not a failure
//   {"fail":"<check>","error":"..."}   first failure; the process exits 1
//   {"fail":"timeout","check":"..."}   global timeout; the process exits 2
//   {"done":true}                      everything passed; the process exits 0
// Everything else (rivetkit's own logfmt logging, diagnostics) is diverted to stderr.

import { inspect } from "node:util";

const realStdoutWrite = process.stdout.write.bind(process.stdout);
let guardsInstalled = false;
let currentCheck = "startup";
let passed = 0;

function jsonReplacer(_key, value) {
	if (typeof value === "bigint") return value.toString();
	if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString("base64") };
	return value;
}

/** Print one JSON line on the real stdout. */
export function emit(obj) {
	realStdoutWrite(`${JSON.stringify(obj, jsonReplacer)}\n`);
}

/** Print one JSON diagnostic line on stderr. */
export function diag(obj) {
	process.stderr.write(`${JSON.stringify(obj, jsonReplacer)}\n`);
}

/** Error -> plain object with everything a RivetError/ActorError carries. */
export function describeError(e) {
	if (e === null || typeof e !== "object") return { error: String(e) };
	const out = { error: e.message ?? String(e) };
	if (e.name) out.name = e.name;
	if (e.group !== undefined) out.group = e.group;
	if (e.code !== undefined) out.code = e.code;
	if (e.metadata !== undefined) out.metadata = e.metadata;
	if (e.stack) out.stack = e.stack;
	return out;
}

/**
 * Install the global timeout, the unhandledRejection logger and the stdout filter.
 * Safe to call more than once (later calls are no-ops).
 */
export function installGuards({ timeoutMs } = {}) {
	if (guardsInstalled) return;
	guardsInstalled = true;

	// rivetkit's logger writes logfmt lines to process.stdout; keep stdout machine-readable.
	process.stdout.write = (chunk, ...rest) => process.stderr.write(chunk, ...rest);

	process.on("unhandledRejection", (reason) => {
		emit({ warn: "unhandledRejection", check: currentCheck, ...describeError(reason) });
	});

	const ms = Number(timeoutMs ?? process.env.TIMEOUT_MS ?? 60000);
	const started = Date.now();
	setTimeout(() => {
		emit({ fail: "timeout", check: currentCheck, afterMs: Date.now() - started, passed });
		process.exit(2);
	}, ms);
}

/** Fail the run: print the fail line and exit 1. */
export function fail(name, e, extra = {}) {
	emit({ fail: name, ...extra, ...describeError(e) });
	process.exit(1);
}

/**
 * Run one check. `fn` may return an object of details that is merged into the ok line.
 * On the first failure prints the fail line and exits 1.
 */
export async function check(name, fn) {
	currentCheck = name;
	let details;
	try {
		details = await fn();
	} catch (e) {
		fail(name, e);
	}
	passed += 1;
	emit({ ok: name, ...(details && typeof details === "object" ? details : {}) });
	return details;
}

export function setCurrentCheck(name) {
	currentCheck = name;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Reject with a descriptive error if `promise` does not settle within `ms`. */
export async function withTimeout(promise, ms, what) {
	let timer;
	try {
		return await Promise.race([
			promise,
			new Promise((_, reject) => {
				timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
			}),
		]);
	} finally {
		clearTimeout(timer);
	}
}

/**
 * Poll `cond` (sync or async) every `interval` ms until it returns a truthy value, which is
 * returned. Throws after `ms` with `what` and, if given, `describe()` of the last state.
 */
export async function waitFor(cond, { ms = 10000, interval = 25, what = "condition", describe } = {}) {
	const deadline = Date.now() + ms;
	for (;;) {
		const v = await cond();
		if (v) return v;
		if (Date.now() >= deadline) {
			let msg = `timed out after ${ms} ms waiting for ${what}`;
			if (describe) {
				try {
					msg += `; last state: ${describe()}`;
				} catch {}
			}
			throw new Error(msg);
		}
		await sleep(interval);
	}
}

/** Await the promise and require a rejection; returns the error. */
export async function expectReject(promise, what) {
	let value;
	try {
		value = await promise;
	} catch (e) {
		return e;
	}
	throw new Error(`expected ${what} to reject, but it resolved with ${inspect(value, { depth: 4 })}`);
}

/** Error info for ok lines (no stack). */
export function errSummary(e) {
	return { group: e?.group, code: e?.code, message: e?.message ?? String(e) };
}

/**
 * Wait until an ActorConn is open (Init received).
 * rivetkit 2.3.x: `conn.ready` (Promise). 2.2.1 has no `ready`, and its `onOpen` does not
 * fire for an already-open connection, so check `connStatus` first.
 */
export function connReady(conn) {
	const ready = conn.ready;
	if (ready && typeof ready.then === "function") return ready;
	if (conn.connStatus === "connected") return Promise.resolve();
	return new Promise((resolve) => {
		const unsubscribe = conn.onOpen(() => {
			unsubscribe();
			resolve();
		});
		// Re-check in case the connection opened between the two checks above.
		if (conn.connStatus === "connected") {
			unsubscribe();
			resolve();
		}
	});
}

/**
 * Records every event of the given names received on `conn`, in arrival order.
 * Each record: {seq, name, payload, args, at}.
 */
export class EventLog {
	constructor(conn, names, label = "conn") {
		this.records = [];
		this.label = label;
		this.unsubscribers = names.map((name) =>
			conn.on(name, (...args) => {
				this.records.push({ seq: this.records.length, name, payload: args[0], args, at: Date.now() });
			}),
		);
		conn.onError?.((e) => diag({ connError: label, ...describeError(e) }));
	}

	get size() {
		return this.records.length;
	}

	of(name, pred = () => true) {
		return this.records.filter((r) => r.name === name && pred(r.payload));
	}

	/** processOutput/processExit records for one pid. */
	forPid(pid) {
		return this.records.filter(
			(r) => (r.name === "processOutput" || r.name === "processExit") && r.payload?.pid === pid,
		);
	}

	/** Concatenated bytes of one stream of one pid. */
	bytes(pid, stream) {
		const chunks = this.of("processOutput", (p) => p?.pid === pid && p?.stream === stream).map(
			(r) => r.payload.data,
		);
		return concatBytes(chunks);
	}

	text(pid, stream) {
		return new TextDecoder().decode(this.bytes(pid, stream));
	}

	shellBytes(shellId) {
		return concatBytes(this.of("shellData", (p) => p?.shellId === shellId).map((r) => r.payload.data));
	}

	shellText(shellId) {
		return new TextDecoder().decode(this.shellBytes(shellId));
	}

	unsubscribe() {
		for (const u of this.unsubscribers) u();
	}
}

export function concatBytes(chunks) {
	let len = 0;
	for (const c of chunks) len += c instanceof Uint8Array ? c.length : 0;
	const out = new Uint8Array(len);
	let off = 0;
	for (const c of chunks) {
		if (!(c instanceof Uint8Array)) continue;
		out.set(c, off);
		off += c.length;
	}
	return out;
}

/** Dispose connections/clients without letting a misbehaving server hang the run. */
export async function disposeBounded(things, ms = 3000) {
	for (const t of things) {
		if (!t || typeof t.dispose !== "function") continue;
		try {
			await withTimeout(Promise.resolve(t.dispose()), ms, "dispose");
		} catch (e) {
			emit({ warn: "dispose", ...errSummary(e) });
		}
	}
}

/** Print {"done":true} and exit 0. */
export function done() {
	emit({ done: true });
	process.exit(0);
}

/** Validate the common run() options; ENDPOINT is mandatory (never use rivetkit's default). */
export function normalizeOptions({ endpoint, encoding, key }) {
	if (!endpoint) fail("config", new Error("ENDPOINT is required, e.g. ENDPOINT=http://127.0.0.1:6420"));
	const enc = encoding || "bare";
	if (!["bare", "json", "cbor"].includes(enc)) fail("config", new Error(`unknown ENCODING ${enc}`));
	return { endpoint, encoding: enc, key: key || "test" };
}

// Runs the examples of the "Processes & Shell" seed page
// (/work/shared/seeds/000_e6adb14b09e18bd7.txt) against an agentvm server with the real
// rivetkit client. `agent.on(...)` from the page does not exist on a handle; events are
// received with `const conn = agent.connect(); conn.on(...)`.
//
// Does NOT import rivetkit: clients/node/<version>/run.mjs passes `createClient` in.

import assert from "node:assert/strict";
import {
	EventLog,
	check,
	connReady,
	disposeBounded,
	done,
	emit,
	errSummary,
	expectReject,
	installGuards,
	normalizeOptions,
	setCurrentCheck,
	sleep,
	waitFor,
	withTimeout,
} from "./harness.mjs";

const te = new TextEncoder();
const EVENT_WAIT_MS = 10000;
const GRACE_MS = 200; // after processExit, wait this long to catch out-of-order output

function pick(obj, keys) {
	const out = {};
	for (const k of keys) out[k] = obj?.[k];
	return out;
}

/** Wait for the processExit event of `pid` on `log`, then a short grace period. */
async function waitExitEvent(log, pid) {
	const rec = await waitFor(() => log.of("processExit", (p) => p?.pid === pid)[0], {
		ms: EVENT_WAIT_MS,
		what: `processExit event for pid ${pid}`,
		describe: () => JSON.stringify(log.forPid(pid).map((r) => ({ name: r.name, stream: r.payload?.stream }))),
	});
	await sleep(GRACE_MS);
	return rec;
}

/** Every processOutput of `pid` is well-formed and arrived before its (single) processExit. */
function assertEventOrder(log, pid) {
	const recs = log.forPid(pid);
	const exits = recs.filter((r) => r.name === "processExit");
	assert.equal(exits.length, 1, `expected exactly one processExit for pid ${pid}, got ${exits.length}`);
	const outputs = recs.filter((r) => r.name === "processOutput");
	for (const r of outputs) {
		assert.ok(
			r.payload.data instanceof Uint8Array,
			`processOutput.data must be a Uint8Array, got ${Object.prototype.toString.call(r.payload.data)}`,
		);
		assert.ok(["stdout", "stderr"].includes(r.payload.stream), `bad stream ${r.payload.stream}`);
		assert.ok(r.seq < exits[0].seq, `processOutput for pid ${pid} arrived after processExit`);
	}
	return { outputs, exit: exits[0] };
}

async function execChecks(target, via) {
	await check(`exec:${via}`, async () => {
		const r = await target.exec("echo hello && ls /home/user");
		assert.deepEqual(pick(r, ["exitCode", "stdout", "stderr"]), { exitCode: 0, stdout: "hello\n", stderr: "" });
		return { via };
	});
	await check(`exec_exit_code:${via}`, async () => {
		const r = await target.exec("exit 3");
		assert.equal(r.exitCode, 3);
		return { via };
	});
	await check(`exec_stdin:${via}`, async () => {
		const r = await target.exec("cat", { stdin: "abc" });
		assert.equal(r.stdout, "abc");
		assert.equal(r.exitCode, 0);
		return { via };
	});
}

/**
 * Actions that return nothing resolve to `undefined`, as with the reference engine, over HTTP and
 * over a connection; only clients before 2.3 in json, which cannot decode `undefined` there, get
 * `null`.
 */
async function voidResultsCheck(target, via, { encoding, version }) {
	await check(`void_results:${via}`, async () => {
		const knowsUndefined = encoding !== "json" || !/^2\.[0-2]\./.test(version);
		const expected = knowsUndefined ? undefined : null;
		const { pid } = await target.spawn("cat", []);
		const results = {
			writeProcessStdin: await target.writeProcessStdin(pid, "x\n"),
			closeProcessStdin: await target.closeProcessStdin(pid),
			writeFile: await target.writeFile(`/tmp/void-results-${via}`, "x"),
		};
		assert.equal(await target.waitProcess(pid), 0);
		results.stopProcess = await target.stopProcess(pid);
		for (const [name, value] of Object.entries(results)) {
			assert.equal(value, expected, `${name} resolved to ${value === null ? "null" : typeof value} (${encoding}, ${version})`);
		}
		return { via, resolvedTo: String(expected) };
	});
}

async function spawnEventsCheck(target, log, via) {
	await check(`spawn_events:${via}`, async () => {
		const res = await target.spawn("sh", ["-c", "echo out; echo err >&2; exit 4"]);
		const pid = res?.pid;
		assert.equal(typeof pid, "number", `spawn must return {pid: number}, got ${JSON.stringify(res)}`);
		const exitRec = await waitExitEvent(log, pid);
		const { outputs } = assertEventOrder(log, pid);
		assert.equal(log.text(pid, "stdout"), "out\n");
		assert.equal(log.text(pid, "stderr"), "err\n");
		assert.deepEqual(pick(exitRec.payload, ["pid", "exitCode"]), { pid, exitCode: 4 });
		assert.equal(await target.waitProcess(pid), 4, "waitProcess after exit");
		return { via, pid, outputEvents: outputs.length };
	});
}

export async function run(options) {
	installGuards({ timeoutMs: options.timeoutMs });
	const { endpoint, encoding, key } = normalizeOptions(options);
	const { createClient, version } = options;

	const client = createClient({ endpoint, encoding });
	const agent = client.vm.getOrCreate([key]);

	// --- exec (stateless handle) -------------------------------------------------------
	await execChecks(agent, "handle");
	await voidResultsCheck(agent, "handle", { encoding, version });

	// --- connection: subscribe to everything before any spawn/openShell -----------------
	const conn = agent.connect();
	const log = new EventLog(conn, ["processOutput", "processExit", "shellData", "shellExit"], "seed");
	await check("connect", async () => {
		await withTimeout(connReady(conn), 15000, "connection open (Init)");
		// Barrier: WebSocket frames are ordered, so once an action over the socket has been
		// answered the server has processed the SubscriptionRequests sent on open.
		await conn.listProcesses();
		return { actorId: conn.actorId, connId: conn.connId };
	});

	await execChecks(conn, "conn");
	await voidResultsCheck(conn, "conn", { encoding, version });

	// --- spawn with processOutput / processExit events ----------------------------------
	await spawnEventsCheck(agent, log, "handle");
	await spawnEventsCheck(conn, log, "conn");

	// --- stdin ---------------------------------------------------------------------------
	await check("stdin:handle", async () => {
		const { pid } = await agent.spawn("cat", []);
		await agent.writeProcessStdin(pid, "hello from stdin\n");
		await agent.closeProcessStdin(pid);
		const exitCode = await agent.waitProcess(pid);
		assert.equal(exitCode, 0);
		await waitExitEvent(log, pid);
		assertEventOrder(log, pid);
		assert.equal(log.text(pid, "stdout"), "hello from stdin\n");
		return { via: "handle", pid };
	});
	await check("stdin_bytes:conn", async () => {
		const { pid } = await conn.spawn("cat", []);
		await conn.writeProcessStdin(pid, te.encode("bytes from stdin\n"));
		await conn.writeProcessStdin(pid, "then a string\n");
		await conn.closeProcessStdin(pid);
		assert.equal(await conn.waitProcess(pid), 0);
		await waitExitEvent(log, pid);
		assertEventOrder(log, pid);
		assert.equal(log.text(pid, "stdout"), "bytes from stdin\nthen a string\n");
		return { via: "conn", pid };
	});

	// --- listProcesses / getProcess / stopProcess / killProcess --------------------------
	const { pid: a } = await agent.spawn("sleep", ["1000"]);
	const { pid: b } = await agent.spawn("sleep", ["1000"]);
	await check("list_processes", async () => {
		const list = await agent.listProcesses();
		assert.ok(Array.isArray(list), "listProcesses must return an array");
		for (const pid of [a, b]) {
			const p = list.find((x) => x.pid === pid);
			assert.ok(p, `listProcesses lacks pid ${pid}: ${JSON.stringify(list)}`);
			assert.deepEqual(pick(p, ["pid", "command", "args", "running", "exitCode"]), {
				pid,
				command: "sleep",
				args: ["1000"],
				running: true,
				exitCode: null,
			});
		}
		return { pids: [a, b], count: list.length };
	});
	await check("get_process", async () => {
		const info = await agent.getProcess(a);
		assert.deepEqual(pick(info, ["pid", "command", "args", "running", "exitCode"]), {
			pid: a,
			command: "sleep",
			args: ["1000"],
			running: true,
			exitCode: null,
		});
		return { pid: a };
	});
	await check("stop_process", async () => {
		await agent.stopProcess(a);
		assert.equal(await agent.waitProcess(a), 143, "SIGTERM exit code");
		const exitRec = await waitExitEvent(log, a);
		assert.equal(exitRec.payload.exitCode, 143, "processExit.exitCode after stopProcess");
		const info = await agent.getProcess(a);
		assert.deepEqual(pick(info, ["running", "exitCode"]), { running: false, exitCode: 143 });
		return { pid: a };
	});
	await check("kill_process", async () => {
		await agent.killProcess(b);
		assert.equal(await agent.waitProcess(b), 137, "SIGKILL exit code");
		const info = await agent.getProcess(b);
		assert.deepEqual(pick(info, ["running", "exitCode"]), { running: false, exitCode: 137 });
		const exitRec = await waitExitEvent(log, b);
		assert.equal(exitRec.payload.exitCode, 137, "processExit.exitCode after killProcess");
		return { pid: b };
	});
	await check("get_process_not_found", async () => {
		const e = await expectReject(agent.getProcess(999999), "getProcess(999999)");
		assert.ok(
			String(e?.message).includes("Process not found: 999999"),
			`error message ${JSON.stringify(e?.message)} lacks "Process not found: 999999"`,
		);
		return errSummary(e);
	});

	// --- allProcesses / processTree --------------------------------------------------------
	const shCmd = "sleep 30 & sleep 31 & wait";
	const { pid: shPid } = await agent.spawn("sh", ["-c", shCmd]);
	let all = [];
	let sleeps = [];
	await check("all_processes", async () => {
		await waitFor(
			async () => {
				all = await agent.allProcesses();
				sleeps = all.filter((p) => p.command === "sleep" && ["30", "31"].includes(p.args?.[0]));
				return sleeps.length === 2;
			},
			{ ms: EVENT_WAIT_MS, interval: 100, what: "two sleep processes (30, 31) in allProcesses()", describe: () => JSON.stringify(all) },
		);
		const sh = all.find((p) => p.pid === shPid);
		assert.ok(sh, `allProcesses lacks the sh process ${shPid}`);
		for (const f of ["pid", "ppid", "pgid", "sid", "driver", "command", "args", "cwd", "status", "exitCode", "startTime"]) {
			assert.ok(f in sh, `ProcessInfo lacks field ${f}: ${JSON.stringify(sh)}`);
		}
		for (const f of ["pid", "ppid", "pgid", "sid", "startTime"]) {
			assert.equal(typeof sh[f], "number", `ProcessInfo.${f} must be a number`);
		}
		for (const f of ["driver", "command", "cwd"]) {
			assert.equal(typeof sh[f], "string", `ProcessInfo.${f} must be a string`);
		}
		assert.equal(sh.command, "sh");
		assert.deepEqual(sh.args, ["-c", shCmd]);
		assert.equal(sh.status, "running");
		assert.equal(sh.exitCode, null);
		assert.equal(sh.pgid, shPid, "a spawned process leads its own process group");
		for (const s of sleeps) {
			assert.equal(s.ppid, shPid, `sleep ${s.pid} ppid`);
			assert.equal(s.pgid, sh.pgid, `sleep ${s.pid} pgid`);
			assert.equal(s.status, "running", `sleep ${s.pid} status`);
		}
		return { shPid, sleepPids: sleeps.map((s) => s.pid), driver: sh.driver, total: all.length };
	});
	await check("process_tree", async () => {
		const tree = await agent.processTree();
		assert.ok(Array.isArray(tree), "processTree must return an array");
		let shNode;
		let nodes = 0;
		const walk = (list, depth) => {
			for (const n of list) {
				nodes += 1;
				assert.ok(Array.isArray(n.children), `tree node ${n.pid} lacks a children array`);
				if (n.pid === shPid) shNode = n;
				walk(n.children, depth + 1);
			}
		};
		walk(tree, 0);
		assert.ok(shNode, `processTree lacks the sh process ${shPid}`);
		const childPids = shNode.children.map((c) => c.pid).sort((x, y) => x - y);
		const sleepPids = sleeps.map((s) => s.pid).sort((x, y) => x - y);
		assert.deepEqual(childPids, sleepPids, "children of the sh node");
		for (const c of shNode.children) assert.equal(c.command, "sleep");
		return { roots: tree.length, nodes };
	});
	await check("kill_process_group", async () => {
		await agent.killProcess(shPid);
		let running = [];
		await waitFor(
			async () => {
				running = (await agent.allProcesses()).filter((p) => p.pgid === shPid && p.status === "running");
				return running.length === 0;
			},
			{ ms: EVENT_WAIT_MS, interval: 100, what: `no running process with pgid ${shPid}`, describe: () => JSON.stringify(running) },
		);
		assert.equal(await agent.waitProcess(shPid), 137);
		return { shPid };
	});

	// --- interactive shell -------------------------------------------------------------------
	let shellId;
	const shellDesc = () => JSON.stringify(log.shellText(shellId));
	await check("open_shell", async () => {
		const res = await agent.openShell();
		shellId = res?.shellId;
		assert.equal(typeof shellId, "string", `openShell must return {shellId: string}, got ${JSON.stringify(res)}`);
		return { shellId };
	});
	await check("shell_write", async () => {
		await agent.writeShell(shellId, "echo $((6*7))\n");
		await waitFor(() => log.shellText(shellId).includes("42"), { ms: EVENT_WAIT_MS, what: 'shellData containing "42"', describe: shellDesc });
		for (const r of log.of("shellData", (p) => p?.shellId === shellId)) {
			assert.ok(r.payload.data instanceof Uint8Array, "shellData.data must be a Uint8Array");
		}
		return { shellId };
	});
	await check("shell_resize", async () => {
		await agent.resizeShell(shellId, 120, 40);
		await agent.writeShell(shellId, "stty size\n");
		await waitFor(() => log.shellText(shellId).includes("40 120"), { ms: EVENT_WAIT_MS, what: 'shellData containing "40 120"', describe: shellDesc });
		return { shellId };
	});
	await check("shell_write_bytes", async () => {
		await agent.writeShell(shellId, te.encode("echo bytes-$((20+3))\n"));
		await waitFor(() => log.shellText(shellId).includes("bytes-23"), { ms: EVENT_WAIT_MS, what: 'shellData containing "bytes-23"', describe: shellDesc });
		return { shellId };
	});
	// closeShell, then writes must fail. The seed semantics ("kill and forget") make even an
	// immediate write reject; a server that only rejects once the shell has actually exited is
	// reported with a warn line, and the hard check is made after shellExit (or 3 s).
	let immediate;
	await check("close_shell", async () => {
		await agent.closeShell(shellId);
		try {
			await agent.writeShell(shellId, "x");
			immediate = { rejected: false };
		} catch (e) {
			immediate = { rejected: true, ...errSummary(e) };
		}
		return { shellId, immediateWrite: immediate };
	});
	setCurrentCheck("shell_exit");
	try {
		const rec = await waitFor(() => log.of("shellExit", (p) => p?.shellId === shellId)[0], { ms: 3000, what: "shellExit event" });
		const p = rec.payload;
		if (p.shellId === shellId && typeof p.exitCode === "number") emit({ ok: "shell_exit", shellId, exitCode: p.exitCode });
		else emit({ warn: "shell_exit", error: `malformed shellExit payload ${JSON.stringify(p)}` });
	} catch (e) {
		emit({ warn: "shell_exit", error: e.message });
	}
	if (!immediate.rejected) {
		emit({ warn: "close_shell_immediate_write", error: "writeShell right after closeShell resolved; expected a rejection" });
	}
	await check("write_closed_shell", async () => {
		const e = await expectReject(agent.writeShell(shellId, "x"), "writeShell after the shell ended");
		return { shellId, ...errSummary(e) };
	});

	// --- errors --------------------------------------------------------------------------------
	for (const [via, target] of [["handle", agent], ["conn", conn]]) {
		await check(`error_unknown_action:${via}`, async () => {
			const e = await expectReject(target.noSuchAction(), "noSuchAction()");
			assert.equal(e?.group, "actor", `group of ${JSON.stringify(errSummary(e))}`);
			assert.equal(e?.code, "action_not_found", `code of ${JSON.stringify(errSummary(e))}`);
			return { via, ...errSummary(e) };
		});
		await check(`error_bad_args:${via}`, async () => {
			const e = await expectReject(target.exec(42), "exec(42)");
			return { via, ...errSummary(e) };
		});
	}

	// --- extras beyond the seed page (last, so they cannot mask the seed checks) -----------------
	await check("stdin_binary:conn", async () => {
		const bytes = new Uint8Array([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x0a, 0xc3, 0x28]);
		const { pid } = await conn.spawn("cat", []);
		await conn.writeProcessStdin(pid, bytes);
		await conn.closeProcessStdin(pid);
		assert.equal(await conn.waitProcess(pid), 0);
		await waitExitEvent(log, pid);
		assert.deepEqual(Array.from(log.bytes(pid, "stdout")), Array.from(bytes), "binary round trip through cat");
		return { via: "conn", pid };
	});

	setCurrentCheck("dispose");
	log.unsubscribe();
	await disposeBounded([conn, client]);
	done();
}

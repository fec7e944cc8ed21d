// Cron scenario: scheduleCron, the cronEvent stream on a connection, listCronJobs,
// listCronRuns and cancelCronJob through the real client. The server runs cron on a manual
// clock (`agentvm serve --manual-clock START`); this scenario moves it with
// `POST <endpoint>/debug/clock` rather than waiting a minute.
//
// Does NOT import rivetkit: clients/node/<version>/run.mjs passes `createClient` in.

import assert from "node:assert/strict";
import { check, connReady, done, expectReject, installGuards, normalizeOptions, waitFor } from "./harness.mjs";

export async function run(options) {
	installGuards({ timeoutMs: Number(process.env.TIMEOUT_MS) || 60000 });
	const { endpoint, encoding, key } = normalizeOptions(options);
	const client = options.createClient({ endpoint, encoding });
	const vm = client.vm.getOrCreate([`${key}-cron`]);

	const clock = async (body) => {
		const response = await fetch(`${endpoint}/debug/clock`, {
			method: body ? "POST" : "GET",
			headers: { "content-type": "application/json" },
			body: body && JSON.stringify(body),
		});
		assert.equal(response.status, 200, await response.clone().text());
		return (await response.json()).now;
	};

	const conn = vm.connect();
	const events = [];
	conn.on("cronEvent", (e) => events.push(e.event));
	await connReady(conn);
	const now = await clock();
	const nextMinute = Math.floor(now / 60000) * 60000 + 60000;

	const id = await check("schedule_cron", async () => {
		const { id } = await vm.scheduleCron({
			schedule: "* * * * *",
			action: { type: "exec", command: "echo", args: ["from", "cron"] },
			overlap: "skip",
		});
		assert.equal(typeof id, "string");
		const jobs = await vm.listCronJobs();
		assert.equal(jobs.length, 1);
		assert.equal(jobs[0].id, id);
		assert.equal(jobs[0].nextRun, nextMinute);
		assert.equal(jobs[0].runCount, 0);
		assert.equal(jobs[0].overlap, "skip");
		assert.deepEqual(jobs[0].action, { type: "exec", command: "echo", args: ["from", "cron"] });
		return id;
	});

	await check("cron_event_received_on_the_connection", async () => {
		await clock({ now: nextMinute });
		await waitFor(() => events.some((e) => e.type === "cron:complete"), { ms: 30000, what: "cron:complete", describe: () => JSON.stringify(events) });
		const mine = events.filter((e) => e.jobId === id).map((e) => e.type);
		assert.deepEqual(mine, ["cron:fire", "cron:complete"]);
		assert.equal(events[0].time, nextMinute);
		assert.equal(typeof events[1].durationMs, "number");
		const [run] = await vm.listCronRuns(id);
		assert.equal(run.status, "complete");
		assert.equal(run.exitCode, 0);
		assert.equal(run.stdout, "from cron\n");
		const [job] = await vm.listCronJobs();
		assert.equal(job.runCount, 1);
		assert.equal(job.lastRun, nextMinute);
		assert.equal(job.nextRun, nextMinute + 60000);
		return { events: events.length };
	});

	await check("bad_schedules_are_refused", async () => {
		const bad = await expectReject(vm.scheduleCron({ schedule: "61 * * * *", action: { type: "exec", command: "true" } }), "an invalid pattern");
		assert.match(bad.message, /invalid schedule/);
		const past = await expectReject(vm.scheduleCron({ schedule: "2001-01-01T00:00:00Z", action: { type: "exec", command: "true" } }), "a past one-shot");
		assert.match(past.message, /in the past/);
	});

	await check("cancel_cron_job", async () => {
		await vm.cancelCronJob(id);
		assert.deepEqual(await vm.listCronJobs(), []);
		const before = events.length;
		await clock({ now: nextMinute + 5 * 60000 });
		// Give the scheduler a moment to (not) fire, measured by a round trip through the VM.
		await vm.exec("true");
		assert.equal(events.length, before, JSON.stringify(events));
	});

	await conn.dispose();
	done();
}

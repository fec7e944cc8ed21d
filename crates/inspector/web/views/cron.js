// The VM's cron jobs (`listCronJobs`) with their last runs (`listCronRuns`), and cancelling.
// Both read the VM's file without waking it.

import { action } from "../api.js";

const time = (ms) => (ms == null ? "—" : new Date(ms).toLocaleString());

export async function renderCron(panel, vm, connection) {
	const jobs = document.createElement("div");
	jobs.className = "table-wrap";
	const runs = document.createElement("div");
	runs.className = "table-wrap";
	panel.append(jobs, runs);

	const draw = async () => {
		const list = await action(vm, "listCronJobs");
		if (list.length === 0) {
			jobs.innerHTML = `<p class="muted">No cron jobs. A client adds one with <code>scheduleCron({schedule, action})</code>.</p>`;
		} else {
			const table = document.createElement("table");
			table.innerHTML = "<thead><tr><th>Job</th><th>Schedule</th><th>Action</th><th>Next run</th><th>Last run</th><th>Runs</th><th></th></tr></thead>";
			const body = document.createElement("tbody");
			for (const job of list) {
				const row = document.createElement("tr");
				const what = job.action.type === "exec" ? [job.action.command, ...(job.action.args || [])].join(" ") : `${job.action.agentType}: ${job.action.prompt}`;
				const cancel = document.createElement("button");
				cancel.type = "button";
				cancel.className = "danger";
				cancel.textContent = "Cancel";
				cancel.setAttribute("aria-label", `Cancel job ${job.id}`);
				cancel.addEventListener("click", async () => {
					await action(vm, "cancelCronJob", [job.id]);
					await draw();
				});
				const cells = [job.id, `${job.schedule} (${job.timezone})`, what, time(job.nextRun), time(job.lastRun), `${job.runCount}${job.running ? " (running)" : ""}`, cancel];
				for (const value of cells) {
					const cell = document.createElement("td");
					if (value instanceof Node) cell.append(value);
					else cell.textContent = value;
					row.append(cell);
				}
				body.append(row);
			}
			table.append(body);
			jobs.replaceChildren(table);
		}
		const recent = await action(vm, "listCronRuns", [null, { limit: 20 }]);
		const table = document.createElement("table");
		table.innerHTML = "<thead><tr><th>Run</th><th>Job</th><th>Started</th><th>Status</th><th>Duration</th><th>Output or error</th></tr></thead>";
		const body = document.createElement("tbody");
		for (const run of recent) {
			const row = document.createElement("tr");
			const output = run.error || (run.stdout || "").slice(0, 200) || (run.sessionId ? `session ${run.sessionId}` : "");
			for (const value of [run.runId, run.jobId, time(run.startedAt), run.status, run.durationMs == null ? "—" : `${run.durationMs} ms`, output]) {
				const cell = document.createElement("td");
				cell.textContent = String(value);
				row.append(cell);
			}
			body.append(row);
		}
		table.append(body);
		if (recent.length === 0) {
			const none = document.createElement("p");
			none.className = "muted";
			none.textContent = "No runs yet.";
			runs.replaceChildren(none);
		} else {
			runs.replaceChildren(table);
		}
	};
	connection.on("cronEvent", () => draw().catch(() => {}));
	await draw();
}

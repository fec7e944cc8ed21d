// The VM's cron jobs (`listCronJobs`) with their last runs (`listCronRuns`), and cancelling.
// Both read the VM's file without waking it.

import { action } from "../api.js";
import { note, row, scroller, table } from "../dom.js";

const time = (ms) => (ms == null ? "—" : new Date(ms).toLocaleString());

export async function renderCron(panel, vm, connection) {
	const jobs = scroller();
	const runs = scroller();
	panel.append(jobs, runs);

	const draw = async () => {
		const list = await action(vm, "listCronJobs");
		const jobRows = list.map((job) => {
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
			const runCount = `${job.runCount}${job.running ? " (running)" : ""}`;
			return row([job.id, `${job.schedule} (${job.timezone})`, what, time(job.nextRun), time(job.lastRun), runCount, cancel]);
		});
		jobs.replaceChildren(
			list.length === 0
				? note("No cron jobs. A client adds one with scheduleCron({schedule, action}).")
				: table(["Job", "Schedule", "Action", "Next run", "Last run", "Runs", ""], jobRows),
		);
		const recent = await action(vm, "listCronRuns", [null, { limit: 20 }]);
		const runRows = recent.map((run) => {
			const output = run.error || (run.stdout || "").slice(0, 200) || (run.sessionId ? `session ${run.sessionId}` : "");
			const duration = run.durationMs == null ? "—" : `${run.durationMs} ms`;
			return row([run.runId, run.jobId, time(run.startedAt), run.status, duration, output]);
		});
		runs.replaceChildren(
			recent.length === 0 ? note("No runs yet.") : table(["Run", "Job", "Started", "Status", "Duration", "Output or error"], runRows),
		);
	};
	connection.on("cronEvent", () => draw().catch(() => {}));
	await draw();
}

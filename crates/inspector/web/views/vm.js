// One VM: its terminal, processes, files, sessions, cron jobs and event log, as tabs, and
// destroying it (after a confirmation). The page holds one WebSocket connection to the VM for
// everything live.

import { action, listVms, vmAddress } from "../api.js";
import { Connection } from "../connection.js";
import { renderCron } from "./cron.js";
import { renderEvents } from "./events.js";
import { renderFiles } from "./files.js";
import { renderProcesses } from "./processes.js";
import { renderSessions } from "./sessions.js";
import { renderTerminal } from "./terminal.js";

// The first is shown on arrival: the event log, which wakes no VM (a terminal would).
const TABS = [
	["events", "Events", renderEvents],
	["terminal", "Terminal", renderTerminal],
	["processes", "Processes", renderProcesses],
	["files", "Files", renderFiles],
	["sessions", "Sessions", renderSessions],
	["cron", "Cron", renderCron],
];

/** "Destroy VM" and its confirmation: the VM's files, sessions, events and jobs go for good. */
function destroyControl(vm, label) {
	const box = document.createElement("div");
	box.className = "destroy";
	const ask = document.createElement("button");
	ask.type = "button";
	ask.className = "danger";
	ask.textContent = "Destroy VM…";
	ask.addEventListener("click", () => {
		const confirm = document.createElement("div");
		confirm.setAttribute("role", "alertdialog");
		confirm.setAttribute("aria-label", "Confirm destroying the VM");
		const text = document.createElement("p");
		text.textContent = `Destroy ${label}? Its files, sessions, events and cron jobs are deleted for good.`;
		const yes = document.createElement("button");
		yes.type = "button";
		yes.className = "danger";
		yes.textContent = "Destroy";
		const no = document.createElement("button");
		no.type = "button";
		no.textContent = "Keep it";
		no.addEventListener("click", () => box.replaceChildren(ask));
		yes.addEventListener("click", async () => {
			yes.disabled = no.disabled = true;
			text.textContent = `Destroying ${label}…`;
			await action(vm, "destroy");
			location.hash = "#/";
		});
		confirm.append(text, yes, no);
		box.replaceChildren(confirm);
		no.focus();
	});
	box.append(ask);
	return box;
}

export async function renderVm(main, crumbs, id) {
	const vm = vmAddress(id);
	const info = (await listVms()).find((v) => v.id === id);
	if (!info) throw new Error(`no VM with id ${id} (destroyed?)`);
	const back = document.createElement("a");
	back.href = "#/";
	back.textContent = "VMs";
	crumbs.append(back, ` / ${info.name} / ${info.key.join("/")}`);

	const heading = document.createElement("h1");
	heading.textContent = info.key.join("/") || "(empty key)";
	const state = document.createElement("p");
	state.className = "muted status";
	state.setAttribute("aria-live", "polite");
	const tabs = document.createElement("div");
	tabs.className = "tabs";
	tabs.setAttribute("role", "tablist");
	main.append(heading, state, destroyControl(vm, info.key.join("/")), tabs);

	const connection = new Connection(vm, { onState: (s) => (state.textContent = `connection ${s}`) });
	// For diagnostics (and the browser test, which drops the connection on purpose).
	window.agentvmInspector = { connection };
	// Each tab is made when first shown and then kept (hidden when another is shown), so the
	// terminal's shell lives on while another tab is looked at.
	const panels = new Map();
	const leaves = [];
	const show = async (id) => {
		for (const button of tabs.children) button.setAttribute("aria-selected", String(button.dataset.tab === id));
		for (const [tab, panel] of panels) panel.hidden = tab !== id;
		if (panels.has(id)) return;
		const panel = document.createElement("section");
		panel.className = "panel";
		panel.setAttribute("role", "tabpanel");
		panels.set(id, panel);
		main.append(panel);
		const [, , render] = TABS.find(([tab]) => tab === id);
		leaves.push((await render(panel, vm, connection)) || (() => {}));
	};
	for (const [id, label] of TABS) {
		const button = document.createElement("button");
		button.type = "button";
		button.setAttribute("role", "tab");
		button.dataset.tab = id;
		button.textContent = label;
		button.addEventListener("click", () => show(id));
		tabs.append(button);
	}
	await show(TABS[0][0]);
	return () => {
		for (const leave of leaves) leave();
		connection.close();
	};
}

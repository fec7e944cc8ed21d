// One VM: its terminal, processes and event log, as tabs. The page holds one WebSocket
// connection to the VM for everything live.

import { listVms, vmAddress } from "../api.js";
import { Connection } from "../connection.js";
import { renderEvents } from "./events.js";
import { renderProcesses } from "./processes.js";
import { renderTerminal } from "./terminal.js";

const TABS = [
	["terminal", "Terminal", renderTerminal],
	["processes", "Processes", renderProcesses],
	["events", "Events", renderEvents],
];

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
	main.append(heading, state, tabs);

	const connection = new Connection(vm, { onState: (s) => (state.textContent = `connection ${s}`) });
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
	await show("terminal");
	return () => {
		for (const leave of leaves) leave();
		connection.close();
	};
}

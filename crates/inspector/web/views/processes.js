// The VM's process tree (`processTree`), refreshed every 2 s while the page is open (asking
// the VM keeps it awake).

import { action } from "../api.js";
import { note, row, scroller, table } from "../dom.js";

export async function renderProcesses(panel, vm) {
	const wrap = scroller();
	wrap.setAttribute("aria-label", "Process tree");
	panel.append(wrap);
	const refresh = async () => {
		const rows = [];
		const add = (node, depth) => {
			const command = document.createElement("td");
			command.style.paddingLeft = `${0.6 + depth * 1.4}rem`;
			command.textContent = `${depth ? "└ " : ""}${[node.command, ...(node.args || [])].join(" ")}`;
			const started = node.startTime ? new Date(node.startTime).toLocaleTimeString() : "";
			rows.push(row([node.pid, command, node.status ?? "", started]));
			for (const child of node.children || []) add(child, depth + 1);
		};
		for (const root of await action(vm, "processTree")) add(root, 0);
		wrap.replaceChildren(rows.length === 0 ? note("No processes run in this VM now.") : table(["PID", "Command", "Status", "Started"], rows));
	};
	await refresh();
	const timer = setInterval(() => refresh().catch(() => {}), 2000);
	return () => clearInterval(timer);
}

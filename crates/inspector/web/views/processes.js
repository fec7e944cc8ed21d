// The VM's process tree (`processTree`), refreshed every 2 s while the page is open (asking
// the VM keeps it awake).

import { action } from "../api.js";

export async function renderProcesses(panel, vm) {
	const wrap = document.createElement("div");
	wrap.className = "table-wrap";
	wrap.setAttribute("aria-label", "Process tree");
	panel.append(wrap);
	const refresh = async () => {
		const roots = await action(vm, "processTree");
		const table = document.createElement("table");
		table.innerHTML = "<thead><tr><th>PID</th><th>Command</th><th>Status</th><th>Started</th></tr></thead>";
		const body = document.createElement("tbody");
		let count = 0;
		const add = (node, depth) => {
			count += 1;
			const row = document.createElement("tr");
			const command = document.createElement("td");
			command.style.paddingLeft = `${0.6 + depth * 1.4}rem`;
			command.textContent = `${depth ? "└ " : ""}${[node.command, ...(node.args || [])].join(" ")}`;
			const cells = [String(node.pid), command, node.status ?? "", node.startTime ? new Date(node.startTime).toLocaleTimeString() : ""];
			for (const value of cells) {
				if (value instanceof Node) {
					row.append(value);
				} else {
					const cell = document.createElement("td");
					cell.textContent = value;
					row.append(cell);
				}
			}
			body.append(row);
			for (const child of node.children || []) add(child, depth + 1);
		};
		for (const root of roots) add(root, 0);
		table.append(body);
		if (count === 0) {
			const none = document.createElement("p");
			none.className = "muted";
			none.textContent = "No processes run in this VM now.";
			wrap.replaceChildren(none);
		} else {
			wrap.replaceChildren(table);
		}
	};
	await refresh();
	const timer = setInterval(() => refresh().catch(() => {}), 2000);
	return () => clearInterval(timer);
}

// The VM's processes (`allProcesses`), refreshed every 2 s.

import { action } from "../api.js";

export async function renderProcesses(panel, vm) {
	const wrap = document.createElement("div");
	wrap.className = "table-wrap";
	panel.append(wrap);
	const refresh = async () => {
		const list = await action(vm, "allProcesses");
		const table = document.createElement("table");
		table.innerHTML = "<thead><tr><th>PID</th><th>PPID</th><th>Command</th><th>Status</th></tr></thead>";
		const body = document.createElement("tbody");
		for (const p of list) {
			const row = document.createElement("tr");
			for (const value of [p.pid, p.ppid, [p.command, ...(p.args || [])].join(" "), p.status ?? p.state ?? ""]) {
				const cell = document.createElement("td");
				cell.textContent = String(value ?? "");
				row.append(cell);
			}
			body.append(row);
		}
		table.append(body);
		if (list.length === 0) {
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

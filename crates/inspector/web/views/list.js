// The VM list: every VM of the server, its actor name, key and phase, updated every 2 s.

import { listVms } from "../api.js";

const REFRESH_MS = 2000;

export async function renderList(main, crumbs) {
	crumbs.textContent = "VMs";
	const heading = document.createElement("h1");
	heading.textContent = "VMs";
	const status = document.createElement("p");
	status.className = "muted status";
	status.setAttribute("aria-live", "polite");
	const wrap = document.createElement("div");
	wrap.className = "table-wrap";
	main.append(heading, status, wrap);

	const draw = (vms) => {
		if (vms.length === 0) {
			wrap.innerHTML = `<p class="muted">No VMs yet. Create one with a client: <code>client.vm.getOrCreate(["my-agent"])</code>.</p>`;
			return;
		}
		const table = document.createElement("table");
		table.innerHTML = "<thead><tr><th>Key</th><th>Actor</th><th>State</th><th>Created</th><th>Id</th></tr></thead>";
		const body = document.createElement("tbody");
		for (const vm of vms) {
			const row = document.createElement("tr");
			const link = document.createElement("a");
			link.href = `#/vm/${encodeURIComponent(vm.id)}`;
			link.textContent = vm.key.join("/") || "(empty key)";
			const cells = [link, vm.name, vm.phase, new Date(vm.createdAt).toLocaleString(), vm.id];
			for (const value of cells) {
				const cell = document.createElement("td");
				if (value instanceof Node) cell.append(value);
				else cell.textContent = value;
				row.append(cell);
			}
			row.children[2].className = `phase-${vm.phase}`;
			body.append(row);
		}
		table.append(body);
		wrap.replaceChildren(table);
	};

	const refresh = async () => {
		const vms = await listVms();
		draw(vms);
		status.textContent = `${vms.length} VM${vms.length === 1 ? "" : "s"} · updated ${new Date().toLocaleTimeString()}`;
	};
	await refresh();
	const timer = setInterval(() => refresh().catch(() => {}), REFRESH_MS);
	return () => clearInterval(timer);
}

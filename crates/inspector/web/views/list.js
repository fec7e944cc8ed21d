// The VM list: every VM of the server — its key, actor name, state, uptime, processes, memory
// and CPU time (from its cgroups, while awake) and newest event — updated every 2 s. Reading it
// wakes no VM.

import { listVms } from "../api.js";
import { row, scroller, table } from "../dom.js";

const REFRESH_MS = 2000;

function duration(ms) {
	const s = Math.max(0, Math.floor(ms / 1000));
	if (s < 60) return `${s}s`;
	if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
	if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
	return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

const dash = "—";
const mib = (bytes) => (bytes == null ? dash : `${(bytes / 1048576).toFixed(1)} MiB`);
const cpu = (usec) => (usec == null ? dash : `${(usec / 1e6).toFixed(2)} s`);

export async function renderList(main, crumbs) {
	crumbs.textContent = "VMs";
	const heading = document.createElement("h1");
	heading.textContent = "VMs";
	const status = document.createElement("p");
	status.className = "muted status";
	status.setAttribute("aria-live", "polite");
	const wrap = scroller();
	main.append(heading, status, wrap);

	const draw = (vms) => {
		if (vms.length === 0) {
			wrap.innerHTML = `<p class="muted">No VMs yet. Create one with a client: <code>client.vm.getOrCreate(["my-agent"])</code>.</p>`;
			return;
		}
		const rows = vms.map((vm) => {
			const link = document.createElement("a");
			link.href = `#/vm/${encodeURIComponent(vm.id)}`;
			link.textContent = vm.key.join("/") || "(empty key)";
			const last = vm.lastEvent ? `${vm.lastEvent.name} · ${new Date(vm.lastEvent.at).toLocaleTimeString()}` : dash;
			const uptime = vm.bootedAt == null ? dash : duration(Date.now() - vm.bootedAt);
			const tr = row([link, vm.name, vm.phase, uptime, vm.processes ?? dash, mib(vm.memoryBytes), cpu(vm.cpuUsec), last, vm.id]);
			tr.children[2].className = `phase-${vm.phase}`;
			return tr;
		});
		const headers = ["Key", "Actor", "State", "Uptime", "Processes", "Memory", "CPU", "Last event", "Id"];
		wrap.replaceChildren(table(headers, rows));
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

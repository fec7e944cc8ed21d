// The VM's event log: the durable history (`getVmEvents`, read once when the tab opens), then
// the events as they happen over the page's connection (a connection does not keep the VM
// awake; polling actions would). Filtered by event name.

import { action } from "../api.js";
import { row, scroller, table } from "../dom.js";

const LIVE = ["processExit", "shellExit", "vmBooted", "vmShutdown", "networkDenied", "sessionEvent", "permissionRequest", "agentCrashed", "cronEvent"];
const SHOWN = 500;

export async function renderEvents(panel, vm, connection) {
	const filter = document.createElement("input");
	filter.type = "search";
	filter.placeholder = "Filter by event name (e.g. cronEvent)";
	filter.setAttribute("aria-label", "Filter events by name");
	const wrap = scroller();
	panel.append(filter, wrap);
	let events = (await action(vm, "getVmEvents", [{}])).map((e) => ({ seq: e.seq, name: e.name, at: e.createdAt, data: e.data }));
	let active = true;
	const draw = () => {
		const wanted = filter.value.trim();
		const rows = events
			.filter((e) => !wanted || e.name.includes(wanted))
			.slice(-SHOWN)
			.map((e) => {
				const data = { ...e.data };
				if (data.data instanceof Uint8Array) data.data = new TextDecoder().decode(data.data);
				return row([e.seq ?? "live", e.name, new Date(e.at).toLocaleTimeString(), JSON.stringify(data)]);
			});
		wrap.replaceChildren(table(["#", "Event", "When", "Data"], rows));
	};
	for (const name of LIVE) {
		connection.on(name, (data) => {
			if (!active) return;
			events.push({ seq: null, name, at: Date.now(), data });
			if (events.length > 5 * SHOWN) events = events.slice(-SHOWN);
			draw();
		});
	}
	filter.addEventListener("input", draw);
	draw();
	return () => {
		active = false;
	};
}

// The VM's agent sessions: their durable list (`listPersistedSessions`), and for the one chosen
// its transcript (`getSessionEvents`, then `sessionEvent` live) drawn as messages, tool calls
// and plans, with its pending permission requests answerable (once / always / reject) and a
// prompt box while its agent runs.

import { action } from "../api.js";
import { note, row, scroller, table } from "../dom.js";

/** Renders a transcript entry list into `view`: messages, tool calls, plans. */
function drawTranscript(view, entries) {
	view.replaceChildren();
	let message = null;
	const tools = new Map();
	for (const entry of entries) {
		const method = entry.method;
		const update = entry.params?.update;
		if (method === "session/prompt") {
			message = null;
			const p = document.createElement("p");
			p.className = "turn-user";
			p.textContent = `› ${(entry.params?.prompt || []).map((c) => c.text || "").join("")}`;
			view.append(p);
		} else if (method === "session/update" && update) {
			const kind = update.sessionUpdate;
			if (kind === "agent_message_chunk" || kind === "agent_thought_chunk") {
				if (!message || message.dataset.kind !== kind) {
					message = document.createElement("p");
					message.className = kind === "agent_message_chunk" ? "turn-agent" : "turn-thought";
					message.dataset.kind = kind;
					view.append(message);
				}
				message.textContent += update.content?.text || "";
			} else if (kind === "tool_call" || kind === "tool_call_update") {
				message = null;
				let row = tools.get(update.toolCallId);
				if (!row) {
					row = document.createElement("p");
					row.className = "turn-tool";
					tools.set(update.toolCallId, row);
					view.append(row);
					row.dataset.title = update.title || update.toolCallId;
				}
				if (update.title) row.dataset.title = update.title;
				row.textContent = `⚙ ${row.dataset.title} — ${update.status || "pending"}`;
			} else if (kind === "plan") {
				message = null;
				const list = document.createElement("ul");
				list.className = "turn-plan";
				list.setAttribute("aria-label", "Plan");
				for (const step of update.entries || []) {
					const item = document.createElement("li");
					item.textContent = `${step.status === "completed" ? "☑" : "☐"} ${step.content}`;
					list.append(item);
				}
				view.append(list);
			}
		}
	}
}

/** The permission requests of `entries` with no answer yet. */
function pendingRequests(entries) {
	const asked = new Map();
	for (const entry of entries) {
		if (entry.method === "session/request_permission") asked.set(entry.params.permissionId, entry.params);
		if (entry.method === "permission/answered") asked.delete(entry.params.permissionId);
	}
	return [...asked.values()];
}

export async function renderSessions(panel, vm, connection) {
	const list = scroller();
	const detail = document.createElement("div");
	detail.className = "panel";
	panel.append(list, detail);
	let current = null;
	let entries = [];

	const drawList = async () => {
		const sessions = await action(vm, "listPersistedSessions");
		if (sessions.length === 0) {
			list.replaceChildren(note("No sessions. A client starts one with createSession(agentType)."));
			return;
		}
		const rows = sessions
			.slice()
			.reverse()
			.map((s) => {
				const open = document.createElement("button");
				open.type = "button";
				open.textContent = s.sessionId.slice(0, 12);
				open.setAttribute("aria-label", `Open session ${s.sessionId}`);
				open.addEventListener("click", () => show(s.sessionId));
				return row([open, s.agentType, new Date(s.createdAt).toLocaleString()]);
			});
		list.replaceChildren(table(["Session", "Agent", "Created"], rows));
	};

	const drawDetail = () => {
		if (!current) return;
		const heading = document.createElement("h2");
		heading.textContent = `Session ${current}`;
		const permissions = document.createElement("div");
		permissions.className = "permissions";
		permissions.setAttribute("aria-live", "polite");
		for (const request of pendingRequests(entries)) {
			const box = document.createElement("div");
			box.className = "permission";
			box.setAttribute("role", "group");
			box.setAttribute("aria-label", "Permission request");
			const text = document.createElement("p");
			const tool = request.params?.toolCall;
			text.textContent = `The agent asks: ${request.description || tool?.title || "permission"}`;
			box.append(text);
			for (const [reply, label] of [["once", "Allow once"], ["always", "Allow always"], ["reject", "Reject"]]) {
				const button = document.createElement("button");
				button.type = "button";
				button.textContent = label;
				if (reply === "reject") button.className = "danger";
				button.addEventListener("click", async () => {
					for (const b of box.querySelectorAll("button")) b.disabled = true;
					await action(vm, "respondPermission", [current, request.permissionId, reply]);
				});
				box.append(button);
			}
			permissions.append(box);
		}
		const view = document.createElement("div");
		view.className = "transcript";
		view.setAttribute("aria-label", "Transcript");
		drawTranscript(view, entries);
		const form = document.createElement("form");
		form.className = "prompt";
		form.innerHTML = `<label for="prompt-text">Prompt</label> <input id="prompt-text" name="text" autocomplete="off"> <button type="submit">Send</button>`;
		form.addEventListener("submit", (event) => {
			event.preventDefault();
			const text = form.text.value.trim();
			if (!text) return;
			form.text.value = "";
			action(vm, "sendPrompt", [current, text]).catch((e) => alert(e.message));
		});
		detail.replaceChildren(heading, permissions, view, form);
	};

	const show = async (sessionId) => {
		current = sessionId;
		entries = (await action(vm, "getSessionEvents", [sessionId])).map((e) => e.event);
		drawDetail();
	};

	connection.on("sessionEvent", (e) => {
		if (e.sessionId === current) {
			entries.push(e.event);
			drawDetail();
		} else {
			drawList().catch(() => {});
		}
	});
	// Permission requests and answers are in the transcript; re-read it to show them.
	connection.on("permissionRequest", (e) => {
		if (e.sessionId === current) show(current).catch(() => {});
		else drawList().catch(() => {});
	});
	await drawList();
}

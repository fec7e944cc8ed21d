// A WebSocket connection to one VM in the RivetKit protocol (JSON encoding): actions answered by
// id, events delivered to the handlers subscribed with `on`. Reconnects by itself after a drop
// (waiting 0.5 s, then longer up to 5 s) and subscribes again; `onState` hears "open"/"closed".

import { decode, token } from "./api.js";

export class Connection {
	constructor(vm, { onState } = {}) {
		this.vm = vm;
		this.onState = onState || (() => {});
		this.handlers = new Map();
		this.pending = new Map();
		this.nextId = 1;
		this.closed = false;
		this.delay = 500;
		this.ready = null;
		this.opened = 0;
		this.reopenHandlers = [];
		this.open();
	}

	open() {
		// A browser cannot set headers on a WebSocket: the token goes in the path (`<id>@<token>`).
		const segment = encodeURIComponent(this.vm.id) + (token() ? `@${encodeURIComponent(token())}` : "");
		const scheme = location.protocol === "https:" ? "wss" : "ws";
		const url = `${scheme}://${location.host}/gateway/${segment}/connect`;
		const socket = new WebSocket(url, ["rivet", "rivet_encoding.json"]);
		this.socket = socket;
		this.ready = new Promise((resolve) => {
			this.markReady = resolve;
		});
		socket.onmessage = (message) => this.receive(JSON.parse(message.data));
		socket.onclose = () => {
			for (const { reject } of this.pending.values()) reject(new Error("the connection closed"));
			this.pending.clear();
			this.onState("closed");
			if (!this.closed) {
				setTimeout(() => this.open(), this.delay);
				this.delay = Math.min(this.delay * 2, 5000);
			}
		};
	}

	receive(frame) {
		const { tag, val } = frame.body || {};
		if (tag === "Init") {
			this.delay = 500;
			for (const name of this.handlers.keys()) this.send({ tag: "SubscriptionRequest", val: { eventName: name, subscribe: true } });
			this.markReady();
			this.onState("open");
			this.opened += 1;
			if (this.opened > 1) for (const handler of this.reopenHandlers) handler();
		} else if (tag === "ActionResponse") {
			const id = Number(decode(val.id));
			this.pending.get(id)?.resolve(decode(val.output));
			this.pending.delete(id);
		} else if (tag === "Error") {
			const id = val.actionId == null ? null : Number(decode(val.actionId));
			const error = Object.assign(new Error(val.message || val.code), { code: val.code, group: val.group });
			if (id != null && this.pending.has(id)) {
				this.pending.get(id).reject(error);
				this.pending.delete(id);
			}
		} else if (tag === "Event") {
			for (const handler of this.handlers.get(val.name) || []) handler(decode(val.args?.[0]));
		}
	}

	send(body) {
		if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ body }));
	}

	/** Calls `name` with `args` once the connection is open; its output. */
	async call(name, args = []) {
		await this.ready;
		const id = this.nextId++;
		return new Promise((resolve, reject) => {
			this.pending.set(id, { resolve, reject });
			this.send({ tag: "ActionRequest", val: { id: ["$BigInt", String(id)], name, args } });
		});
	}

	/** Subscribes `handler` to the event `name`. */
	on(name, handler) {
		if (!this.handlers.has(name)) {
			this.handlers.set(name, []);
			this.send({ tag: "SubscriptionRequest", val: { eventName: name, subscribe: true } });
		}
		this.handlers.get(name).push(handler);
	}

	/** Runs `handler` each time the connection is open again after a drop (events sent in
	 * between were not received: the handler reads them from the VM's log). */
	onReopen(handler) {
		this.reopenHandlers.push(handler);
	}

	close() {
		this.closed = true;
		this.socket.close();
	}
}

// The server's API as the inspector uses it: the same routes and authentication as any client
// (HTTP actions in the JSON encoding, WebSocket connections in the RivetKit protocol). The token,
// when the server has one, is kept in this browser tab's sessionStorage only.

const TOKEN_KEY = "agentvm.token";

export function token() {
	return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
	if (value) sessionStorage.setItem(TOKEN_KEY, value);
	else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer of the server: `{group, code, message}` and the HTTP status. */
export class ApiError extends Error {
	constructor(status, body) {
		super(body?.message || `HTTP ${status}`);
		this.status = status;
		this.group = body?.group;
		this.code = body?.code;
	}
	get unauthorized() {
		return this.status === 401 || this.status === 403 && this.code === "unauthorized";
	}
}

function headers(json) {
	const h = {};
	if (json) h["content-type"] = "application/json";
	if (token()) h["x-rivet-token"] = token();
	return h;
}

async function answer(response) {
	const text = await response.text();
	let body = null;
	try {
		body = text ? JSON.parse(text) : null;
	} catch {
		body = { message: text };
	}
	if (!response.ok) throw new ApiError(response.status, body);
	return body;
}

/** Every VM of the server: `[{id, name, key, phase, createdAt, ...}]`. */
export async function listVms() {
	return answer(await fetch("/inspector/api/vms", { headers: headers(false) }));
}

/** The VM with actor id `id`, for actions and connections (the gateway's id form: it never
 * creates a VM). */
export function vmAddress(id) {
	return { id };
}

/** Calls `action` on a VM over HTTP; its output. */
export async function action(vm, name, args = []) {
	const url = `/gateway/${encodeURIComponent(vm.id)}/action/${encodeURIComponent(name)}`;
	const body = await answer(await fetch(url, { method: "POST", headers: headers(true), body: JSON.stringify({ args }) }));
	return decode(body?.output);
}

/** JSON-encoding values back into JavaScript: `["$Uint8Array", base64]` → bytes, `["$BigInt", n]` → number. */
export function decode(value) {
	if (Array.isArray(value)) {
		if (value.length === 2 && value[0] === "$Uint8Array" && typeof value[1] === "string") return base64ToBytes(value[1]);
		if (value.length === 2 && value[0] === "$BigInt") return Number(value[1]);
		if (value.length === 2 && value[0] === "$Undefined") return undefined;
		return value.map(decode);
	}
	if (value && typeof value === "object") {
		const out = {};
		for (const [k, v] of Object.entries(value)) out[k] = decode(v);
		return out;
	}
	return value;
}

export function base64ToBytes(text) {
	const raw = atob(text);
	const bytes = new Uint8Array(raw.length);
	for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
	return bytes;
}

export function bytesToBase64(bytes) {
	let raw = "";
	for (let i = 0; i < bytes.length; i += 0x8000) raw += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
	return btoa(raw);
}

/** Bytes as the JSON encoding carries them. */
export function encodeBytes(bytes) {
	return ["$Uint8Array", bytesToBase64(bytes)];
}

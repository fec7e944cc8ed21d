// The inspector's entry point: a hash router over its pages. `#/` lists the VMs, `#/vm/<id>`
// shows one. A 401 from any call shows the login form (the server was started with --token).

import { ApiError, setToken, token } from "./api.js";
import { renderLogin } from "./views/login.js";
import { renderList } from "./views/list.js";
import { renderVm } from "./views/vm.js";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const logout = document.getElementById("logout");
let leave = () => {};

/** What a page returns: a function that stops its timers and connections. */
async function route() {
	leave();
	leave = () => {};
	main.replaceChildren();
	crumbs.replaceChildren();
	logout.hidden = !token();
	const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
	try {
		if (parts[0] === "vm" && parts[1]) {
			leave = await renderVm(main, crumbs, parts[1]);
		} else {
			leave = await renderList(main, crumbs);
		}
	} catch (e) {
		showError(e);
	}
}

/** Shows an error; a refused token (or none) asks for one. */
export function showError(e) {
	if (e instanceof ApiError && e.unauthorized) {
		leave();
		leave = () => {};
		main.replaceChildren();
		renderLogin(main, Boolean(token()), (value) => {
			setToken(value);
			route();
		});
		return;
	}
	const p = document.createElement("p");
	p.className = "error";
	p.setAttribute("role", "alert");
	p.textContent = e?.message || String(e);
	main.prepend(p);
}

logout.addEventListener("click", () => {
	setToken("");
	route();
});
window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => showError(event.reason));
route();

// The login form: the server's token, kept in this tab's sessionStorage only (never in a cookie
// or localStorage), sent as `x-rivet-token` and `rvt-token=`.

export function renderLogin(main, refused, onToken) {
	const form = document.createElement("form");
	form.className = "login";
	form.setAttribute("aria-label", "Log in");
	form.innerHTML = `
		<h1>Log in</h1>
		<p class="muted">This server needs its API token (<code>agentvm serve --token</code>).</p>
		<label for="token">Token</label>
		<input id="token" name="token" type="password" autocomplete="current-password" required>
		<button type="submit">Log in</button>`;
	if (refused) {
		const p = document.createElement("p");
		p.className = "error";
		p.setAttribute("role", "alert");
		p.textContent = "That token was refused.";
		form.append(p);
	}
	form.addEventListener("submit", (event) => {
		event.preventDefault();
		onToken(form.token.value.trim());
	});
	main.append(form);
	form.token.focus();
}

// The inspector in a real browser (tests/inspector.rs): playwright-core drives Debian's headless
// Chromium against a server started with --token. Prints one JSON line per check on stdout and
// `{"done":true}` at the end; exits non-zero on the first failure. Screenshots go to SHOTS.
//
// Environment: BASE (the server's URL), TOKEN, KEY (a VM the test created, with a cron job and
// an agent session waiting for a permission answer), DOOMED (another VM, destroyed from the
// page), CHROMIUM (the browser's executable), SHOTS (a directory).

import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const { BASE, TOKEN, KEY, DOOMED, CHROMIUM, SHOTS } = process.env;
const out = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

const browser = await chromium.launch({
	executablePath: CHROMIUM,
	headless: true,
	args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
const failures = [];
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
page.on("console", (m) => m.type() === "error" && failures.push(`console: ${m.text()}`));

async function check(name, run) {
	try {
		const detail = await run();
		out({ ok: name, ...(detail || {}) });
	} catch (e) {
		await page.screenshot({ path: `${SHOTS}/failed-${name}.png`, fullPage: true }).catch(() => {});
		out({ fail: name, error: String(e?.stack || e), failures });
		await browser.close();
		process.exit(1);
	}
}

/** The terminal's text, row by row (xterm.js renders rows into the DOM). */
const terminalText = () => page.locator(".xterm-rows").innerText();

async function waitForTerminal(pattern, what) {
	const deadline = Date.now() + 20000;
	for (;;) {
		const text = await terminalText();
		const match = text.match(pattern);
		if (match) return match;
		if (Date.now() > deadline) throw new Error(`${what}: not in the terminal:\n${text}`);
		await page.waitForTimeout(50);
	}
}

await check("without_the_token_only_a_login_prompt", async () => {
	await page.goto(`${BASE}/`);
	await page.getByLabel("Token").waitFor();
	const body = await page.locator("main").innerText();
	assert.ok(!body.includes(KEY), `the VM shows without a token: ${body}`);
	assert.equal(await page.locator("table").count(), 0);
	await page.screenshot({ path: `${SHOTS}/login.png` });
	await page.getByLabel("Token").fill("wrong");
	await page.getByRole("button", { name: "Log in" }).click();
	await page.getByText("That token was refused.").waitFor();
	assert.ok(!(await page.locator("main").innerText()).includes(KEY));
	// The refused calls' 401s are the browser's console errors of this check, and expected.
	failures.length = 0;
});

await check("with_the_token_the_vm_list", async () => {
	await page.getByLabel("Token").fill(TOKEN);
	await page.getByRole("button", { name: "Log in" }).click();
	await page.getByRole("link", { name: KEY }).waitFor();
	const row = await page.locator("tr", { hasText: KEY }).innerText();
	assert.match(row, /vm/);
	await page.screenshot({ path: `${SHOTS}/vms.png` });
	return { row };
});

await check("a_terminal_runs_what_is_typed", async () => {
	await page.getByRole("link", { name: KEY }).click();
	// A VM's page opens on its event log (no wake); the terminal is a tab away.
	await page.getByRole("tab", { name: "Events", selected: true }).waitFor();
	await page.getByRole("tab", { name: "Terminal" }).click();
	await page.locator(".xterm-rows").waitFor();
	await waitForTerminal(/user@[\w-]+:~\$/, "a prompt");
	await page.locator(".xterm").click();
	await page.keyboard.type("echo hi-$RANDOM\n");
	const [, number] = await waitForTerminal(/^hi-(\d+)\s*$/m, "the echo's output");
	await page.screenshot({ path: `${SHOTS}/terminal.png` });
	return { echoed: `hi-${number}` };
});

await check("resizing_the_window_resizes_the_terminal", async () => {
	await page.keyboard.type("clear; stty size\n");
	const [, rows1, cols1] = await waitForTerminal(/^(\d+) (\d+)\s*$/m, "stty size");
	await page.setViewportSize({ width: 900, height: 600 });
	const deadline = Date.now() + 20000;
	for (;;) {
		await page.keyboard.type("clear; stty size\n");
		await page.waitForTimeout(300);
		const match = (await terminalText()).match(/^(\d+) (\d+)\s*$/m);
		if (match && (match[1] !== rows1 || match[2] !== cols1)) {
			assert.ok(Number(match[2]) < Number(cols1), `narrower: ${match[2]} < ${cols1}`);
			await page.screenshot({ path: `${SHOTS}/terminal-resized.png` });
			return { before: `${rows1}x${cols1}`, after: `${match[1]}x${match[2]}` };
		}
		if (Date.now() > deadline) throw new Error(`stty size stayed ${rows1} ${cols1}`);
	}
});

await check("ctrl_c_interrupts", async () => {
	await page.keyboard.type("clear; sleep 600\n");
	await page.waitForTimeout(300);
	await page.keyboard.press("Control+C");
	await page.keyboard.type("echo after-$((6*7))\n");
	await waitForTerminal(/^after-42\s*$/m, "the command after Ctrl-C");
});

await check("the_terminal_replays_what_it_missed_while_disconnected", async () => {
	await page.keyboard.type("clear\n");
	await page.waitForTimeout(200);
	await page.keyboard.type("sleep 0.3; echo replayed-$((40+2))\n");
	await waitForTerminal(/echo replayed-\$\(\(40\+2\)\)/, "the typed line");
	await page.evaluate(() => window.agentvmInspector.connection.socket.close());
	await waitForTerminal(/^replayed-42\s*$/m, "the output sent while disconnected");
	await page.getByText("reconnected").waitFor();
});

await check("a_permission_request_answered_from_the_page", async () => {
	await page.setViewportSize({ width: 1280, height: 800 });
	await page.getByRole("tab", { name: "Sessions" }).click();
	await page.getByRole("button", { name: /^Open session / }).first().click();
	const request = page.getByRole("group", { name: "Permission request" });
	await request.waitFor();
	await page.screenshot({ path: `${SHOTS}/session-permission.png` });
	await request.getByRole("button", { name: "Allow once" }).click();
	await page.locator(".transcript", { hasText: "The terminal said: done" }).waitFor();
	await page.screenshot({ path: `${SHOTS}/session.png` });
});

await check("the_agents_file_in_the_file_browser", async () => {
	await page.getByRole("tab", { name: "Files" }).click();
	await page.getByRole("button", { name: "from-agent.txt" }).click();
	const text = await page.getByLabel("Contents of /home/user/from-agent.txt").innerText();
	assert.ok(text.length > 0, "the agent's file is empty");
	await page.screenshot({ path: `${SHOTS}/files.png` });
	// An upload lands in the directory shown.
	await page.locator('input[type="file"]').setInputFiles({ name: "uploaded.txt", mimeType: "text/plain", buffer: Buffer.from("uploaded from the browser\n") });
	await page.getByRole("button", { name: "uploaded.txt" }).click();
	assert.equal(await page.getByLabel("Contents of /home/user/uploaded.txt").innerText(), "uploaded from the browser\n");
	return { text: text.slice(0, 80) };
});

await check("cron_jobs", async () => {
	await page.getByRole("tab", { name: "Cron" }).click();
	await page.getByRole("cell", { name: "nightly", exact: true }).waitFor();
	await page.screenshot({ path: `${SHOTS}/cron.png` });
});

await check("the_other_tabs_and_a_narrow_window", async () => {
	await page.getByRole("tab", { name: "Processes" }).click();
	await page.locator("td", { hasText: "bash" }).first().waitFor();
	await page.screenshot({ path: `${SHOTS}/processes.png` });
	await page.getByRole("tab", { name: "Events" }).click();
	await page.locator("td", { hasText: "vmBooted" }).first().waitFor();
	await page.screenshot({ path: `${SHOTS}/events.png` });
	await page.setViewportSize({ width: 390, height: 800 });
	await page.getByRole("link", { name: "VMs" }).click();
	await page.getByRole("link", { name: KEY }).waitFor();
	await page.screenshot({ path: `${SHOTS}/vms-narrow.png` });
});

await check("destroy_asks_first", async () => {
	await page.setViewportSize({ width: 1280, height: 800 });
	await page.getByRole("link", { name: DOOMED }).click();
	await page.getByRole("button", { name: "Destroy VM…" }).click();
	await page.getByRole("button", { name: "Keep it" }).click();
	await page.getByRole("button", { name: "Destroy VM…" }).click();
	await page.screenshot({ path: `${SHOTS}/destroy-confirm.png` });
	await page.getByRole("alertdialog").getByRole("button", { name: "Destroy" }).click();
	await page.getByRole("link", { name: KEY }).waitFor();
	const deadline = Date.now() + 10000;
	while ((await page.getByRole("link", { name: DOOMED }).count()) > 0) {
		if (Date.now() > deadline) throw new Error(`${DOOMED} is still listed`);
		await page.waitForTimeout(100);
	}
});

await check("keyboard_only", async () => {
	// From the list, Tab reaches the VM's link and Enter opens it.
	await page.setViewportSize({ width: 1280, height: 800 });
	await page.goto(`${BASE}/#/`);
	await page.getByRole("link", { name: KEY }).waitFor();
	for (let i = 0; i < 10; i++) {
		await page.keyboard.press("Tab");
		if ((await page.evaluate(() => document.activeElement?.textContent)) === KEY) break;
	}
	await page.keyboard.press("Enter");
	await page.getByRole("tab", { name: "Terminal" }).waitFor();
});

assert.deepEqual(failures, []);
await browser.close();
out({ done: true });

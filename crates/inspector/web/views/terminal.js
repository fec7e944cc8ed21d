// A terminal into the VM: `openShell` sized to the element (xterm.js and its fit add-on), typed
// keys to `writeShell` (Ctrl-C included), `resizeShell` whenever the window changes size, output
// from `shellData`. The shell outlives a dropped connection: once the connection is back, the
// output sent meanwhile is replayed from the VM's event log (`getVmEvents`).

import { Terminal } from "/inspector/vendor/xterm.mjs";
import { FitAddon } from "/inspector/vendor/addon-fit.mjs";

export async function renderTerminal(panel, vm, connection) {
	const box = document.createElement("div");
	box.className = "terminal-box";
	box.setAttribute("aria-label", "Terminal");
	const status = document.createElement("p");
	status.className = "muted status";
	status.setAttribute("aria-live", "polite");
	panel.append(box, status);

	const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, theme: { background: "#000000" } });
	const fit = new FitAddon();
	term.loadAddon(fit);
	term.open(box);
	fit.fit();

	let shellId = null;
	// Chunks of this shell's output written so far: a replay skips as many. While a replay
	// reads the log, live chunks are not written but counted; each was in the log before it was
	// sent, so another pass (which reads further) picks it up.
	let written = 0;
	let replaying = false;
	let missed = 0;
	connection.on("shellData", (e) => {
		if (e.shellId !== shellId) return;
		if (replaying) {
			missed += 1;
			return;
		}
		term.write(e.data);
		written += 1;
	});
	const pass = async () => {
		let index = 0;
		let from;
		for (;;) {
			const page = await connection.call("getVmEvents", [{ since: from, limit: 1000 }]);
			if (page.length === 0) break;
			for (const e of page) {
				if (e.name === "shellData" && e.data?.shellId === shellId) {
					if (index >= written) {
						term.write(e.data.data);
						written += 1;
					}
					index += 1;
				}
			}
			from = page[page.length - 1].seq;
		}
	};
	const replay = async () => {
		if (!shellId || replaying) return;
		replaying = true;
		try {
			do {
				missed = 0;
				await pass();
			} while (missed > 0);
			status.textContent = `${shellId} · reconnected`;
		} finally {
			replaying = false;
		}
	};
	connection.onReopen(() => replay().catch((e) => (status.textContent = `replay failed: ${e.message}`)));
	connection.on("shellExit", (e) => {
		if (e.shellId === shellId) {
			status.textContent = `the shell exited (${e.exitCode}); reload the tab for a new one`;
			shellId = null;
		}
	});
	const { shellId: id } = await connection.call("openShell", [{ cols: term.cols, rows: term.rows }]);
	shellId = id;
	status.textContent = `${shellId} · ${term.cols}×${term.rows}`;
	// Keystrokes go out one `writeShell` at a time, in order (a connection runs its actions
	// side by side, so separate calls could overtake each other); what is typed meanwhile is
	// sent together next.
	let typed = "";
	let sending = false;
	const flush = async () => {
		if (sending) return;
		sending = true;
		while (typed && shellId) {
			const data = typed;
			typed = "";
			await connection.call("writeShell", [shellId, data]).catch(() => {});
		}
		sending = false;
	};
	term.onData((data) => {
		typed += data;
		flush();
	});
	term.onResize(({ cols, rows }) => {
		if (shellId) {
			connection.call("resizeShell", [shellId, cols, rows]).catch(() => {});
			status.textContent = `${shellId} · ${cols}×${rows}`;
		}
	});
	const refit = () => fit.fit();
	window.addEventListener("resize", refit);
	term.focus();
	return () => {
		window.removeEventListener("resize", refit);
		if (shellId) connection.call("closeShell", [shellId]).catch(() => {});
		term.dispose();
	};
}

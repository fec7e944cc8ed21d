// The VM's files: browse a directory (`readdirRecursive` one level), view a file (text up to
// 1 MiB shown; any file downloadable), upload into the directory shown (`writeFile`). File
// actions wake a sleeping VM quietly and let it sleep again.

import { action, encodeBytes } from "../api.js";
import { row, scroller, table } from "../dom.js";

const SHOWN_BYTES = 1 << 20;

export async function renderFiles(panel, vm) {
	const bar = document.createElement("form");
	bar.className = "files-bar";
	bar.innerHTML = `<label for="files-path">Path</label> <input id="files-path" name="path" value="/home/user" size="40"> <button type="submit">Open</button>
		<label class="upload">Upload <input type="file" name="upload" multiple></label>`;
	const status = document.createElement("p");
	status.className = "muted status";
	status.setAttribute("aria-live", "polite");
	const listing = scroller();
	listing.setAttribute("aria-label", "Files");
	const viewer = document.createElement("div");
	viewer.className = "viewer";
	panel.append(bar, status, listing, viewer);
	let dir = "/home/user";

	const open = async (path) => {
		const entries = await action(vm, "readdirRecursive", [path, { maxDepth: 0 }]);
		dir = path;
		bar.path.value = path;
		viewer.replaceChildren();
		const entriesShown = [];
		if (path !== "/") entriesShown.push({ name: "..", path: path.replace(/\/[^/]+\/?$/, "") || "/", type: "directory", size: "" });
		for (const e of entries.sort((a, b) => a.path.localeCompare(b.path))) entriesShown.push({ name: e.path.split("/").pop(), path: e.path, type: e.type, size: e.size });
		const rows = entriesShown.map((entry) => {
			const name = document.createElement("button");
			name.type = "button";
			name.className = "link";
			name.textContent = entry.type === "directory" ? `${entry.name}/` : entry.name;
			name.addEventListener("click", () => (entry.type === "directory" ? open(entry.path) : view(entry.path)));
			return row([name, entry.type, entry.size]);
		});
		listing.replaceChildren(table(["Name", "Type", "Size"], rows));
		status.textContent = `${entries.length} entries in ${path}`;
	};

	const view = async (path) => {
		const bytes = await action(vm, "readFile", [path]);
		const heading = document.createElement("h2");
		heading.textContent = path;
		const download = document.createElement("a");
		download.textContent = `Download (${bytes.length} bytes)`;
		download.href = URL.createObjectURL(new Blob([bytes]));
		download.download = path.split("/").pop();
		const pre = document.createElement("pre");
		pre.className = "file-text";
		pre.setAttribute("aria-label", `Contents of ${path}`);
		try {
			const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, SHOWN_BYTES));
			pre.textContent = text + (bytes.length > SHOWN_BYTES ? "\n… (download for the rest)" : "");
		} catch {
			pre.textContent = "(binary: download it)";
		}
		viewer.replaceChildren(heading, download, pre);
	};

	bar.addEventListener("submit", (event) => {
		event.preventDefault();
		open(bar.path.value.trim() || "/").catch((e) => (status.textContent = e.message));
	});
	bar.upload.addEventListener("change", async () => {
		for (const file of bar.upload.files) {
			const bytes = new Uint8Array(await file.arrayBuffer());
			await action(vm, "writeFile", [`${dir.replace(/\/$/, "")}/${file.name}`, encodeBytes(bytes)]);
		}
		bar.upload.value = "";
		await open(dir);
	});
	await open(dir);
	return () => {};
}

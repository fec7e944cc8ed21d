// Small DOM helpers the views share. Everything a VM or an agent produced is put in the page as
// text (`textContent`), never as HTML.

/** A table row: each value becomes a cell — text, or a node placed in the cell (a `<td>` as it is). */
export function row(values) {
	const tr = document.createElement("tr");
	for (const value of values) {
		if (value instanceof HTMLTableCellElement) {
			tr.append(value);
			continue;
		}
		const cell = document.createElement("td");
		if (value instanceof Node) cell.append(value);
		else cell.textContent = String(value ?? "");
		tr.append(cell);
	}
	return tr;
}

/** A table with `headers` and `rows` (from [`row`]). */
export function table(headers, rows) {
	const t = document.createElement("table");
	const head = t.createTHead().insertRow();
	for (const header of headers) {
		const th = document.createElement("th");
		th.textContent = header;
		head.append(th);
	}
	const body = t.createTBody();
	body.append(...rows);
	return t;
}

/** A box that scrolls sideways when its table is wider than the window. */
export function scroller() {
	const div = document.createElement("div");
	div.className = "table-wrap";
	return div;
}

/** A muted paragraph (an empty list's note). */
export function note(text) {
	const p = document.createElement("p");
	p.className = "muted";
	p.textContent = text;
	return p;
}

// Small DOM and formatting helpers shared by the other modules.

/** Build an element: el("button", {class: "x", onclick: f}, "text", child). */
export function el(tag, attrs = {}, ...children) {
	const node = document.createElement(tag);
	for (const [key, value] of Object.entries(attrs)) {
		if (value == null || value === false) continue;
		if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
		else if (key === "class") node.className = value;
		else if (key === "dataset") Object.assign(node.dataset, value);
		else if (key in node && typeof value !== "string") node[key] = value;
		else node.setAttribute(key, value === true ? "" : value);
	}
	node.append(...children.flat().filter((c) => c != null && c !== false));
	return node;
}

/** A <button type="button">: el("button") would submit the form it sits in. */
export const btn = (attrs, ...children) => el("button", { type: "button", ...attrs }, ...children);

/** A random id, in insecure contexts too (crypto.randomUUID needs https or localhost). */
export function randomId() {
	const bytes = crypto.getRandomValues(new Uint8Array(16));
	return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });

/** "14:05" today, "Nov 24" before. */
export function shortTime(iso) {
	if (!iso) return "";
	const date = new Date(iso);
	return date.toDateString() === new Date().toDateString()
		? timeFormat.format(date)
		: dateFormat.format(date);
}

export function fullTime(iso) {
	return iso ? new Date(iso).toLocaleString() : "";
}

export function fileSize(bytes) {
	if (bytes < 1024) return `${bytes} B`;
	if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
	return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** Show or hide `panel`, and say so on the button that controls it. */
export function toggle(panel, button) {
	panel.hidden = !panel.hidden;
	button.ariaExpanded = String(!panel.hidden);
}

/** Announce a short status to screen readers (and show it briefly). */
export function announce(text) {
	const region = document.getElementById("status");
	region.textContent = text;
	clearTimeout(announce.timer);
	announce.timer = setTimeout(() => (region.textContent = ""), 5000);
}

/** Call fn at most once per `ms`, the last call winning. */
export function debounce(fn, ms) {
	let timer;
	return (...args) => {
		clearTimeout(timer);
		timer = setTimeout(() => fn(...args), ms);
	};
}

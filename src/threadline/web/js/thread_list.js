// The thread list: most recent first, unread badges, last message previews, kept live
// by viewerEvents; and the dialogs that start a thread or a direct conversation.
import * as Q from "./queries.js";
import { announce, btn, debounce, el, shortTime } from "./util.js";

export class ThreadList {
	constructor(root, app) {
		this.root = root;
		this.app = app;
		this.threads = new Map();
		// One <li> per thread, updated in place: a list rebuilt under the pointer (a message
		// arriving between mousedown and mouseup) lost the click.
		this.items = new Map();
		this.list = el("ul", { class: "thread-list", "aria-label": "Threads" });
		this.root.replaceChildren(
			el("header", {},
				el("h2", {}, "Threads"),
				btn({ onclick: () => this.newThread(false) }, "New thread"),
				btn({ onclick: () => this.newThread(true) }, "New message")),
			this.list);
	}

	/** Fetches the list, one fetch at a time (asked for meanwhile: once more after);
	 * events that come in meanwhile are applied again on top. */
	load() {
		if (this.loading) {
			this.again = true;
			return this.loading;
		}
		this.loading = (async () => {
			try {
				do {
					this.again = false;
					this.during = [];
					// Failed, it still owes a fetch asked for meanwhile.
					const threads = await this.fetch().catch((e) => { if (!this.again) throw e; });
					if (!threads) continue;
					const during = this.during;
					this.during = null;
					this.threads = threads;
					for (const [change, ...args] of during) this[change](...args);
					this.render();
				} while (this.again);
			} finally {
				this.loading = null;
				this.during = null;
			}
		})();
		return this.loading;
	}

	async fetch() {
		const threads = new Map();
		let after = null;
		do {
			const { edges, pageInfo } = (await this.app.api.request(Q.THREADS, { after })).threads;
			edges.forEach(({ node }) => threads.set(node.id, node));
			after = pageInfo.hasNextPage ? pageInfo.endCursor : null;
		} while (after && threads.size < 200);
		return threads;
	}

	/** A thread as the server sent it now: an older seq loses, markers only move forward.
	 * A read marker's answer (`listed`) may predate a removal: it adds no thread. */
	upsert(thread, listed) {
		this.during?.push(["upsert", thread, listed]);
		const known = this.threads.get(thread.id);
		if (listed && !known) return;
		if (known && thread.lastSeq < known.lastSeq) return;
		if (known && thread.lastReadSeq < known.lastReadSeq) {
			thread = { ...thread, lastReadSeq: known.lastReadSeq, unreadCount: thread.lastSeq > known.lastReadSeq ? thread.unreadCount : 0 };
		}
		this.threads.set(thread.id, thread);
		this.render();
	}

	remove(threadId) {
		this.during?.push(["remove", threadId]);
		this.threads.delete(threadId);
		this.items.delete(threadId);
		this.render();
	}

	render() {
		const recent = (t) => t.lastMessageAt ?? t.updatedAt;
		const sorted = [...this.threads.values()].sort((a, b) => recent(b).localeCompare(recent(a)));
		const items = sorted.map((t) => this.item(t));
		if (!items.length) items.push(el("li", { class: "placeholder" }, "No threads yet: start one."));
		const shown = [...this.list.children];
		if (items.length === shown.length && items.every((li, i) => li === shown[i])) return;
		const focused = document.activeElement?.closest?.(".thread-list li")?.dataset.id;
		this.list.replaceChildren(...items);
		if (focused) this.list.querySelector(`[data-id="${focused}"] button`)?.focus();
	}

	item(thread) {
		let li = this.items.get(thread.id);
		if (!li) {
			li = el("li", { dataset: { id: thread.id } },
				btn({ onclick: () => this.app.openThread(thread.id) },
					el("span", { class: "title" }), el("time"), el("span", { class: "preview" })));
			li.badge = el("span", { class: "badge" });
			this.items.set(thread.id, li);
		}
		const last = thread.lastMessage;
		const preview = !last ? "No messages yet" : last.deletedAt ? "Message deleted"
			: `${last.author?.displayName ?? "Someone"}: ${last.body || (last.attachments.length ? "📎 attachment" : "")}`;
		const unread = thread.unreadCount > 0 && thread.id !== this.app.activeId;
		const button = li.firstChild;
		const [title, time, text] = button.children;
		button.className = `thread${unread ? " unread" : ""}`;
		button.ariaCurrent = thread.id === this.app.activeId ? "true" : null;
		title.textContent = thread.isDirect ? `@ ${thread.title}` : `# ${thread.title}`;
		time.dateTime = thread.lastMessageAt ?? "";
		time.textContent = shortTime(thread.lastMessageAt);
		text.textContent = preview;
		if (unread) {
			li.badge.ariaLabel = `${thread.unreadCount} unread`;
			li.badge.textContent = String(thread.unreadCount);
			if (!li.badge.isConnected) button.append(li.badge);
		} else li.badge.remove();
		return li;
	}

	/** A <dialog> to create a thread (title, people) or a direct conversation (one person). */
	newThread(direct) {
		const picked = new Map();
		const title = el("input", { id: "new-title", required: !direct, maxlength: 200 });
		const search = el("input", { id: "new-search", type: "search", autocomplete: "off" });
		const results = el("ul", { class: "user-results", "aria-label": "People found" });
		const chosen = el("p", { class: "chosen", "aria-live": "polite" });
		const error = el("p", { class: "error", role: "alert" });
		const dialog = el("dialog", { "aria-labelledby": "new-heading", onclose: () => dialog.remove() });
		const find = debounce(async () => {
			const data = await this.app.api.request(Q.USERS, { s: search.value.trim() || null }).catch((e) => announce(e.message));
			const users = (data?.users.edges ?? []).map((e) => e.node).filter((u) => u.id !== this.app.me.id);
			results.replaceChildren(...users.map((user) => el("li", {}, btn({ onclick: () => (direct ? this.create(dialog, error, Q.CREATE_DIRECT, { u: user.id })
					: (picked.set(user.id, user), (chosen.textContent = `With: ${[...picked.values()].map((u) => u.displayName).join(", ")}`))),
			}, `${user.displayName}${user.username ? ` (@${user.username})` : ""}`))));
		}, 200);
		search.addEventListener("input", find);
		dialog.append(el("form", {
			method: "dialog",
			onsubmit: (e) => {
				if (direct || e.submitter?.value === "cancel") return;
				e.preventDefault();
				this.create(dialog, error, Q.CREATE_THREAD, { i: { title: title.value.trim(), participantIds: [...picked.keys()] } });
			},
		},
		el("h2", { id: "new-heading" }, direct ? "New direct message" : "New thread"),
		direct ? null : [el("label", { for: "new-title" }, "Title"), title],
		el("label", { for: "new-search" }, direct ? "Find a person" : "Add people"), search, results, chosen, error,
		el("menu", {},
			direct ? null : el("button", { type: "submit", value: "create" }, "Create"),
			el("button", { type: "submit", value: "cancel", formnovalidate: true }, "Cancel"))));
		document.body.append(dialog);
		dialog.showModal();
		find();
	}

	async create(dialog, error, query, variables) {
		try {
			const thread = Object.values(await this.app.api.request(query, variables))[0];
			this.upsert(thread);
			dialog.close();
			this.app.openThread(thread.id);
		} catch (e) {
			error.textContent = e.message;
		}
	}
}

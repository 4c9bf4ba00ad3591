// The open thread: history (older pages as you scroll up), live events resumed by
// afterSeq, typing, presence, "seen by", the read marker, pinned messages and replies.
import { NetworkError } from "./api.js";
import { Composer } from "./composer.js";
import { historyList, renderMessage } from "./message.js";
import * as Q from "./queries.js";
import { announce, btn, debounce, el, randomId, toggle } from "./util.js";

const TYPING_SHOWN_MS = 7000;

export class ThreadView {
	constructor(root, app) {
		this.root = root;
		this.app = app;
		this.unsubscribe = [];
		this.queue = Promise.resolve();
		this.readObserver = new IntersectionObserver((entries) => this.onSeen(entries), { threshold: 0.5 });
		this.olderObserver = new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && this.loadOlder(), { rootMargin: "600px 0px 0px 0px" });
		this.markRead = debounce(() => this.sendReadMarker(), 300);
		document.addEventListener("visibilitychange", () => this.markRead());
		app.live.addEventListener("status", (e) => e.detail.connected && this.retryFailed());
	}

	// -- opening and closing

	async open(threadId) {
		this.close();
		this.threadId = threadId;
		this.root.replaceChildren(el("p", { class: "placeholder" }, "Loading…"));
		let data;
		try {
			data = await this.app.api.request(Q.THREAD, { t: threadId });
		} catch (error) {
			if (this.threadId === threadId) this.root.replaceChildren(el("p", { class: "error", role: "alert" }, error.message));
			return;
		}
		if (this.threadId !== threadId) return; // another thread was opened meanwhile
		const started = performance.now();
		this.show(data.thread);
		// Two frames: the first render is painted once the second callback runs.
		requestAnimationFrame(() => requestAnimationFrame(() => {
			this.app.metrics.threadRenderMs = performance.now() - started;
		}));
		const sink = (handler) => ({ next: (d) => d && handler(d), error: (e) => /^(FORBIDDEN|NOT_FOUND)$/.test(e?.[0]?.extensions?.code) ? this.app.gone(threadId) : announce(e?.[0]?.message ?? "live updates stopped") });
		const live = this.app.live;
		this.unsubscribe = [
			live.subscribe(Q.THREAD_EVENTS, () => ({ t: threadId, after: this.lastSeq }), sink((d) => this.onEvent(d.threadEvents))),
			live.subscribe(Q.THREAD_ACTIVITY, { t: threadId }, sink((d) => this.onActivity(d.threadActivity))),
		];
		this.watchPresence = () => {
			this.presenceOff?.();
			this.presenceOff = live.subscribe(Q.PRESENCE, { ids: [...this.people.keys()] }, sink((d) => this.setPresence(d.presence)));
		};
		this.watchPresence();
	}

	close() {
		[...this.unsubscribe, this.presenceOff].forEach((stop) => stop?.());
		this.unsubscribe = [];
		this.presenceOff = null;
		this.readObserver.disconnect();
		this.olderObserver.disconnect();
		for (const t of this.typing?.values() ?? []) clearTimeout(t.timer);
		this.threadId = null;
	}

	show(thread) {
		this.thread = thread;
		this.lastSeq = thread.lastSeq;
		this.readSeq = thread.lastReadSeq;
		this.seenSeq = 0;
		this.messages = new Map();
		this.pending = new Map();
		this.typing = new Map();
		this.people = new Map(thread.participants.edges.map(({ node }) => [node.user.id, { ...node, status: node.user.presence.status }]));
		this.remember(thread.pinnedMessages);
		this.title = el("h2", { id: "thread-title" }, thread.title);
		this.pinButton = btn({ class: "pinned-toggle", "aria-expanded": "false", "aria-controls": "pinned", onclick: () => toggle(this.pinnedPanel, this.pinButton) });
		this.pinnedPanel = el("section", { id: "pinned", class: "pinned", hidden: true, "aria-label": "Pinned messages" });
		this.sentinel = el("div", { class: "sentinel", "aria-hidden": "true" });
		this.list = el("div", { class: "messages" });
		this.scroller = el("div", { class: "scroller", role: "log", "aria-labelledby": "thread-title", tabindex: "0",
			onkeydown: (e) => this.onLogKey(e) }, this.sentinel, this.list);
		this.typingLine = el("p", { class: "typing", "aria-live": "polite" });
		this.composer = new Composer(this.composerContext(null, `Message ${thread.title}`));
		this.peopleList = el("ul", { class: "people", "aria-label": "People" });
		this.replies = el("aside", { class: "replies", hidden: true, "aria-label": "Replies" });
		this.root.replaceChildren(
			el("div", { class: "thread-main" },
				el("header", { class: "thread-header" },
					btn({ class: "back", "aria-label": "Back to threads", onclick: () => this.app.showList() }, "←"),
					this.title, this.peopleList, this.pinButton),
				this.pinnedPanel, this.scroller, this.typingLine, this.composer.element),
			this.replies);
		this.list.append(...this.renderPage(thread.messages));
		this.renderPeople();
		this.renderPinned();
		this.updateSeen();
		this.scroller.scrollTop = this.scroller.scrollHeight;
		this.olderObserver.observe(this.sentinel);
		this.composer.focus();
	}

	// -- rendering

	context(inPanel) {
		return {
			me: this.app.me, role: this.thread.myRole, inPanel,
			presenceOf: (id) => this.people.get(id)?.status ?? "OFFLINE",
			toggleReaction: (m, emoji, add) => this.mutate(add ? Q.REACT : Q.UNREACT, { m: m.id, e: emoji }),
			openReplies: (m) => this.openReplies(m),
			startEdit: (m) => (inPanel ? this.panelComposer : this.composer).edit(m),
			remove: (m) => confirm("Delete this message?") && this.mutate(Q.DELETE, { m: m.id }),
			pin: (m, pinned) => this.mutate(Q.PIN, { m: m.id, p: pinned }),
			showHistory: (m, button) => this.toggleHistory(m, button),
			retry: (m) => this.deliver(m),
		};
	}

	render(message, inPanel = false, ctx = this.context(inPanel)) {
		const node = renderMessage(message, ctx);
		if (message.seq) this.readObserver.observe(node);
		return node;
	}

	remember(messages) {
		messages.forEach((m) => this.messages.set(m.id, m));
	}

	/** A page's top-level messages as elements (replies live in the side panel); the
	 * cursor for the page above it. */
	renderPage({ edges, pageInfo: p }) {
		const ctx = this.context(false);
		const messages = edges.map((e) => e.node);
		this.olderCursor = p.hasPreviousPage ? p.startCursor : null;
		this.remember(messages);
		return messages.filter((m) => !m.parent).map((m) => this.render(m, false, ctx));
	}

	rerender(message) {
		for (const node of this.root.querySelectorAll(`[data-id="${message.id}"]`)) {
			this.readObserver.unobserve(node);
			node.replaceWith(this.render(message, Boolean(node.closest(".replies"))));
		}
	}

	/** One tab stop for the whole history: arrow keys move between messages. */
	onLogKey(event) {
		const items = [...this.list.children];
		const index = items.indexOf(event.target);
		const step = { ArrowUp: -1, ArrowDown: 1 }[event.key];
		if (!step || (index < 0 && event.target !== this.scroller)) return;
		event.preventDefault();
		items[index < 0 ? items.length - 1 : Math.max(0, Math.min(items.length - 1, index + step))]?.focus();
	}

	atBottom() {
		return this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 80;
	}

	/** Insert in seq order, before pending sends; a view at the bottom stays there. */
	place(list, node, seq, scroll) {
		const stick = scroll && this.atBottom();
		let after = list.lastElementChild;
		while (after && (after.classList.contains("pending") || Number(after.dataset.seq) > seq)) after = after.previousElementSibling;
		if (after) after.after(node);
		else list.prepend(node);
		if (stick) this.scroller.scrollTop = this.scroller.scrollHeight;
	}

	async loadOlder() {
		if (!this.olderCursor || this.loadingOlder) return;
		this.loadingOlder = true;
		const threadId = this.threadId;
		try {
			const data = await this.app.api.request(Q.OLDER, { t: threadId, before: this.olderCursor });
			if (this.threadId !== threadId) return;
			const height = this.scroller.scrollHeight;
			this.list.prepend(...this.renderPage(data.messages));
			this.scroller.scrollTop += this.scroller.scrollHeight - height; // keep what the reader sees in place
		} catch (error) {
			announce(`Older messages did not load: ${error.message}`);
		} finally {
			this.loadingOlder = false;
		}
		// The observer fires on changes only: if the top is still in sight, keep going.
		const top = this.sentinel.getBoundingClientRect().bottom;
		if (this.olderCursor && top > this.scroller.getBoundingClientRect().top - 600) this.loadOlder();
	}

	// -- live events

	onEvent(event) {
		if (event.seq <= this.lastSeq) return; // a replay overlapping what we have
		this.lastSeq = event.seq;
		const known = this.messages.get(event.messageId);
		switch (event.__typename) {
			case "MessageCreated":
			case "MessageEdited":
			case "MessagePinned":
				this.upsert(event.message);
				break;
			case "MessageDeleted":
				this.countReply(known?.parent?.id, -1);
				if (known) this.upsert({ ...known, deletedAt: new Date().toISOString(), body: "", attachments: [], reactions: [] });
				break;
			case "ReactionChanged":
				if (known) this.upsert({ ...known, reactions: event.reactions });
				break;
			case "ParticipantChanged":
				// A role change keeps the marker; one added (again) starts from 0.
				if (event.role) this.people.set(event.user.id, { lastReadSeq: 0, ...this.people.get(event.user.id), user: event.user, status: event.user.presence.status });
				else this.people.delete(event.user.id);
				this.renderPeople();
				this.watchPresence(); // the new set of people
				break;
			case "ThreadUpdated":
				this.title.textContent = event.thread.title;
				this.composer.input.placeholder = this.composer.input.ariaLabel = `Message ${event.thread.title}`;
				break;
		}
		this.markRead();
	}

	/** A message from the server (response or event): add it, or update it in place. */
	upsert(message) {
		const known = this.messages.get(message.id);
		this.messages.set(message.id, message);
		const pending = message.clientId && this.pending.get(message.clientId);
		if (pending) {
			this.pending.delete(message.clientId);
			this.root.querySelectorAll(`[data-id="${pending.id}"]`).forEach((n) => n.remove());
		}
		const parentId = message.parent?.id;
		if (known) this.rerender(message);
		else if (!parentId) this.place(this.list, this.render(message), message.seq, true);
		else {
			this.countReply(parentId, 1);
			if (this.panelParent === parentId) this.place(this.panelList, this.render(message, true), message.seq, false);
		}
		const author = message.author?.id;
		if (!known && this.typing.delete(author)) this.renderTyping(); // their message ends their typing
		if (!known && author === this.app.me.id) this.updateSeen();
		this.renderPinned();
	}

	countReply(parentId, step) {
		const parent = this.messages.get(parentId);
		if (parent) this.upsert({ ...parent, replyCount: parent.replyCount + step });
	}

	onActivity(activity) {
		const id = activity.user.id;
		if (activity.__typename === "ReceiptChanged") {
			const person = this.people.get(id);
			if (person) person.lastReadSeq = Math.max(person.lastReadSeq, activity.lastReadSeq);
			this.updateSeen();
			return;
		}
		if (id === this.app.me.id) return;
		clearTimeout(this.typing.get(id)?.timer);
		if (activity.isTyping) {
			// The server expires typing by itself; this is a fallback if that event is lost.
			const timer = setTimeout(() => { this.typing.delete(id); this.renderTyping(); }, TYPING_SHOWN_MS);
			this.typing.set(id, { name: activity.user.displayName, timer });
		} else this.typing.delete(id);
		this.renderTyping();
	}

	renderTyping() {
		const names = [...this.typing.values()].map((t) => t.name);
		this.typingLine.textContent = names.length ? `${new Intl.ListFormat("en").format(names)} ${names[1] ? "are" : "is"} typing…` : "";
	}

	setPresence({ user, presence }) {
		const person = this.people.get(user.id);
		if (person) person.status = presence.status;
		this.root.querySelectorAll(`[data-presence="${user.id}"]`).forEach((n) => (n.dataset.status = presence.status));
	}

	renderPeople() {
		this.peopleList.replaceChildren(...[...this.people.values()].slice(0, 8).map(({ user, status }) =>
			el("li", {}, el("span", { class: "dot", dataset: { presence: user.id, status }, "aria-hidden": "true" }),
				user.displayName)));
	}

	/** "Seen by" under one's own newest message: who has read up to it. */
	updateSeen() {
		this.list.querySelectorAll(".seen").forEach((n) => n.remove());
		const mine = [...this.list.querySelectorAll(".msg.mine:not(.pending)")].at(-1);
		if (!mine) return;
		const seq = Number(mine.dataset.seq);
		const names = [...this.people.values()].filter((p) => p.user.id !== this.app.me.id && p.lastReadSeq >= seq).map((p) => p.user.displayName);
		if (names.length) mine.append(el("p", { class: "seen" }, `Seen by ${names.join(", ")}`));
	}

	// -- the read marker

	onSeen(entries) {
		for (const entry of entries) {
			const seq = Number(entry.target.dataset.seq);
			if (entry.isIntersecting && seq > this.seenSeq) this.seenSeq = seq;
		}
		this.markRead();
	}

	async sendReadMarker() {
		if (!this.threadId || document.visibilityState !== "visible") return;
		// At the bottom everything is read, replies and reactions included.
		const seq = Math.min(this.lastSeq, this.atBottom() ? this.lastSeq : this.seenSeq);
		if (seq <= this.readSeq) return;
		this.readSeq = seq;
		const data = await this.app.api.request(Q.MARK_READ, { t: this.threadId, s: seq }).catch(() => null);
		if (data) this.app.threads.upsert(data.markRead, true);
	}

	// -- sending

	composerContext(parentId, label) {
		return {
			label,
			send: (body, attachmentIds) => this.send(body, attachmentIds, parentId),
			edit: (m, body) => this.mutate(Q.EDIT, { m: m.id, b: body }),
			lastOwnMessage: () => {
				const list = parentId ? this.panelList : this.list;
				const node = [...list.querySelectorAll(".msg.mine:not(.pending):not(.deleted)")].at(-1);
				return node && this.messages.get(node.dataset.id);
			},
			typing: (on) => this.app.api.request(Q.TYPING, { t: this.threadId, on }).catch(() => {}),
			upload: (file, onProgress) => this.app.api.upload(this.threadId, file, onProgress, Q.UPLOAD),
			candidates: () => [...this.people.values()].map((p) => p.user).filter((u) => u.id !== this.app.me.id),
		};
	}

	send(body, attachmentIds, parentId) {
		const clientId = randomId();
		const message = {
			id: `pending-${clientId}`, clientId, body, attachmentIds, pending: true, threadId: this.threadId,
			parent: parentId ? { id: parentId } : null, author: this.app.me, createdAt: new Date().toISOString(),
			reactions: [], attachments: [], replyCount: 0,
		};
		this.pending.set(clientId, message);
		const node = this.render(message, Boolean(parentId));
		(parentId ? this.panelList : this.list).append(node);
		node.scrollIntoView(false); // its own pane: a reply keeps the history's place
		this.deliver(message);
	}

	/** Send (or send again) with the same clientId: the server keeps one message per clientId. */
	async deliver(message) {
		Object.assign(message, { failed: false, error: "" });
		this.rerender(message);
		const input = { threadId: message.threadId, body: message.body, clientId: message.clientId, parentId: message.parent?.id, attachmentIds: message.attachmentIds };
		try {
			const data = await this.app.api.request(Q.SEND, { i: input });
			if (this.threadId === message.threadId) this.upsert(data.sendMessage);
		} catch (error) {
			const network = error instanceof NetworkError;
			Object.assign(message, { failed: true, error: network ? "" : error.message, network });
			if (this.pending.has(message.clientId)) this.rerender(message);
		}
	}

	retryFailed() {
		for (const message of this.pending?.values() ?? []) if (message.failed && message.network) this.deliver(message);
	}

	/** One at a time, in order: a reaction clicked twice is added, then taken back. */
	mutate(query, variables) {
		this.queue = this.queue.then(() => this.app.api.request(query, variables))
			.then((data) => this.upsert(Object.values(data)[0])).catch((error) => announce(error.message));
	}

	// -- panels: edit history, pinned messages, replies

	async toggleHistory(message, button) {
		const article = button.closest(".msg");
		const open = article.querySelector(".history");
		button.ariaExpanded = String(!open);
		if (open) return open.remove();
		const data = await this.app.api.request(Q.EDITS, { m: message.id }).catch((e) => announce(e.message));
		if (data) button.parentElement.after(historyList(data.message.edits));
	}

	renderPinned() {
		const pinned = [...this.messages.values()].filter((m) => m.pinned && !m.deletedAt);
		this.pinButton.textContent = `📌 ${pinned.length}`;
		this.pinButton.hidden = !pinned.length;
		this.pinButton.ariaLabel = `${pinned.length} pinned messages`;
		this.pinnedPanel.replaceChildren(el("ul", {}, pinned.map((m) => el("li", {},
			btn({ onclick: () => this.jumpTo(m) }, `${m.author?.displayName ?? "?"}: ${m.body}`)))));
	}

	jumpTo(message) {
		if (message.parent) return this.openReplies(this.messages.get(message.parent.id) ?? message.parent);
		const node = document.getElementById(`m-${message.id}`);
		node?.scrollIntoView({ block: "center" });
		node ? node.focus() : announce("That message is further up: scroll up to load it.");
	}

	async openReplies(parent) {
		this.panelParent = parent.id;
		this.panelList = el("div", { class: "messages" });
		this.panelComposer = new Composer(this.composerContext(parent.id, "Reply"));
		const close = btn({ "aria-label": "Close replies", onclick: () => this.closeReplies() }, "×");
		this.replies.replaceChildren(el("header", {}, el("h3", {}, "Replies"), close), this.panelList, this.panelComposer.element);
		this.replies.hidden = false;
		const data = await this.app.api.request(Q.REPLIES, { m: parent.id }).catch((e) => announce(e.message));
		if (!data || this.panelParent !== parent.id) return;
		const { replies, ...root } = data.message;
		this.remember([root, ...replies.edges.map((e) => e.node)]);
		this.panelList.replaceChildren(this.render(root, true), el("hr"), ...replies.edges.map((e) => this.render(e.node, true)));
		this.panelComposer.focus();
	}

	closeReplies() {
		const parentId = this.panelParent;
		this.panelParent = null;
		this.replies.hidden = true;
		document.getElementById(`m-${parentId}`)?.focus();
	}
}

// The message input: Enter sends, Shift+Enter adds a line, Up edits one's own last
// message, @ completes mentions, files upload with progress before sending.
import { btn, el, fileSize, randomId } from "./util.js";

const TYPING_EVERY_MS = 3000;

export class Composer {
	/** ctx: {label, send(body, attachmentIds), edit(message, body), lastOwnMessage(),
	 *        typing(on), upload(file, onProgress), candidates()} */
	constructor(ctx) {
		this.ctx = ctx;
		this.editing = null;
		this.uploads = []; // {file, attachment, error}
		this.lastTyping = 0;
		const id = randomId();
		this.input = el("textarea", {
			rows: 1, placeholder: ctx.label, "aria-label": ctx.label, autocomplete: "off",
			"aria-autocomplete": "list", "aria-controls": `mentions-${id}`,
			onkeydown: (e) => this.onKey(e), oninput: () => this.onInput(),
			onblur: () => setTimeout(() => this.closeMentions(), 150),
		});
		this.mentions = el("ul", { id: `mentions-${id}`, class: "mentions", role: "listbox", hidden: true, "aria-label": "Mention someone" });
		this.editNote = el("p", { class: "edit-note", hidden: true },
			"Editing your message (Escape cancels). ", btn({ onclick: () => this.edit(null) }, "Cancel"));
		this.chips = el("ul", { class: "uploads", "aria-label": "Attachments" });
		this.file = el("input", { type: "file", id: `file-${id}`, multiple: true, class: "visually-hidden",
			onchange: () => { [...this.file.files].forEach((f) => this.upload(f)); this.file.value = ""; } });
		this.sendButton = el("button", { type: "submit" }, "Send");
		this.element = el("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); this.submit(); } },
			this.editNote, this.chips, this.mentions,
			el("div", { class: "row" },
				el("label", { for: this.file.id, class: "attach", title: "Attach files" }, "📎", el("span", { class: "visually-hidden" }, "Attach files")),
				this.file,
				this.input, this.sendButton));
	}

	focus() {
		this.input.focus();
	}

	onKey(event) {
		if (!this.mentions.hidden && this.mentionKey(event)) return;
		if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
			event.preventDefault();
			this.submit();
		} else if (event.key === "ArrowUp" && !this.input.value && !this.editing) {
			const message = this.ctx.lastOwnMessage();
			if (message) {
				event.preventDefault();
				this.edit(message);
			}
		} else if (event.key === "Escape" && this.editing) {
			this.edit(null);
		}
	}

	onInput() {
		this.input.style.height = "auto";
		this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
		const now = Date.now();
		if (this.input.value.trim() && !this.editing && now - this.lastTyping > TYPING_EVERY_MS) {
			this.lastTyping = now;
			this.ctx.typing(true);
		}
		this.updateMentions();
	}

	/** Edit `message` (null: stop editing); what one was typing comes back after. */
	edit(message) {
		if (!this.editing) this.draft = this.input.value;
		this.editing = message;
		this.input.value = message ? message.body : this.draft;
		this.editNote.hidden = !message;
		this.sendButton.textContent = message ? "Save" : "Send";
		this.onInput(); // as high as the text
		this.focus();
	}

	get uploading() {
		return this.uploads.some((u) => !u.attachment && !u.error);
	}

	submit() {
		const body = this.input.value.trim();
		if (this.editing) {
			if (body && body !== this.editing.body) this.ctx.edit(this.editing, body);
			this.edit(null);
			return;
		}
		if (this.uploading) return;
		const ids = this.uploads.filter((u) => u.attachment).map((u) => u.attachment.id);
		if (!body && !ids.length) return;
		this.input.value = "";
		this.uploads = [];
		this.chips.replaceChildren();
		this.onInput();
		// The server announces "typing" again only after it heard "stopped".
		if (this.lastTyping) this.ctx.typing(false);
		this.lastTyping = 0;
		this.ctx.send(body, ids);
	}

	async upload(file) {
		const entry = { file };
		const progress = el("progress", { max: 1, value: 0, "aria-label": `Uploading ${file.name}` });
		const remove = btn({ "aria-label": `Remove ${file.name}`, onclick: () => {
			this.uploads = this.uploads.filter((u) => u !== entry);
			chip.remove();
			this.sendButton.disabled = this.uploading;
		} }, "×");
		const chip = el("li", { class: "upload" }, `${file.name} (${fileSize(file.size)}) `, progress, remove);
		this.uploads.push(entry);
		this.chips.append(chip);
		this.sendButton.disabled = true;
		try {
			entry.attachment = await this.ctx.upload(file, (fraction) => (progress.value = fraction));
			progress.replaceWith(el("span", { class: "done" }, "✓"));
		} catch (error) {
			entry.error = error;
			progress.replaceWith(el("span", { class: "error", role: "alert" }, ` not uploaded: ${error.message}`));
		}
		this.sendButton.disabled = this.uploading;
	}

	// -- mentions

	mentionQuery() {
		const before = this.input.value.slice(0, this.input.selectionStart);
		const match = /(?:^|\s)@([\w.-]*)$/.exec(before);
		return match ? match[1].toLowerCase() : null;
	}

	updateMentions() {
		const query = this.mentionQuery();
		const matches = query === null ? [] : this.ctx.candidates()
			.filter((u) => u.username && (u.username.toLowerCase().startsWith(query) || u.displayName.toLowerCase().startsWith(query)))
			.slice(0, 6);
		if (!matches.length) return this.closeMentions();
		this.mentions.replaceChildren(...matches.map((user, i) => el("li", {
			id: `${this.mentions.id}-${i}`, role: "option", "aria-selected": String(i === 0),
			dataset: { username: user.username },
			onmousedown: (e) => { e.preventDefault(); this.pickMention(user.username); },
		}, `${user.displayName} `, el("small", {}, `@${user.username}`))));
		this.mentions.hidden = false;
		this.input.ariaExpanded = "true";
		this.input.setAttribute("aria-activedescendant", `${this.mentions.id}-0`);
	}

	closeMentions() {
		this.mentions.hidden = true;
		this.input.ariaExpanded = "false";
		this.input.removeAttribute("aria-activedescendant");
	}

	mentionKey(event) {
		const options = [...this.mentions.children];
		let index = options.findIndex((o) => o.ariaSelected === "true");
		if (event.key === "ArrowDown" || event.key === "ArrowUp") {
			index = (index + (event.key === "ArrowDown" ? 1 : options.length - 1)) % options.length;
			options.forEach((o, i) => (o.ariaSelected = String(i === index)));
			this.input.setAttribute("aria-activedescendant", options[index].id);
		} else if (event.key === "Enter" || event.key === "Tab") {
			this.pickMention(options[index].dataset.username);
		} else if (event.key === "Escape") {
			this.closeMentions();
		} else {
			return false;
		}
		event.preventDefault();
		return true;
	}

	pickMention(username) {
		const caret = this.input.selectionStart;
		const before = this.input.value.slice(0, caret).replace(/@([\w.-]*)$/, `@${username} `);
		this.input.value = before + this.input.value.slice(caret);
		this.input.selectionStart = this.input.selectionEnd = before.length;
		this.closeMentions();
		this.focus();
	}
}

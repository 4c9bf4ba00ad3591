// One message as an element: author, body with mentions, "edited" mark and its history,
// attachments, reactions, reply count, and the actions its viewer may take.
import { btn, el, fileSize, fullTime, shortTime, toggle } from "./util.js";

const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🚀", "👀"];
const ADMIN_ROLES = new Set(["ADMIN", "OWNER"]);

// A name may end before a letter of these scripts (text_rules._SPACELESS): "@bob谢谢" may be bob.
const NAME_END = /^\.*([\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3031-\u3035\u3038-\u303c\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\u{20000}-\u{3ffff}]|$)/u;

/** The body, the @mentions the server found highlighted (any case, no final full stop);
 * never HTML (bodies are plain text). */
function bodyWithMentions({ body, mentions }) {
	const names = new Set(mentions?.map((u) => u.username?.toLowerCase()));
	return body.split(/(@[\p{L}\p{N}_.-]*[\p{L}\p{N}_-])/u).flatMap((part, i) => {
		let end = i % 2 ? Math.min(part.length, 256) : 0; // usernames: 255 at most
		while (end > 1 && !(NAME_END.test(part.slice(end)) && names.has(part.slice(1, end).toLowerCase()))) end--;
		return end > 1 ? [el("span", { class: "mention" }, part.slice(0, end)), part.slice(end)] : part;
	});
}

function attachmentView(attachment) {
	if (attachment.kind === "IMAGE") {
		return el("a", { href: attachment.url, target: "_blank", rel: "noopener", class: "image" },
			el("img", {
				// Small: a browser decodes every pixel it shows.
				src: attachment.previewUrl ?? attachment.url, alt: attachment.filename, loading: "lazy", decoding: "async",
				width: attachment.width ?? undefined, height: attachment.height ?? undefined,
			}));
	}
	return el("a", { href: attachment.url, download: attachment.filename, class: "file" },
		`📎 ${attachment.filename} (${fileSize(attachment.size)})`);
}

function reactionChip(message, group, ctx) {
	const who = group.users.map((u) => u.displayName).join(", ");
	return btn({ class: "reaction", "aria-pressed": String(group.reactedByMe),
		title: who, "aria-label": `${group.emoji} ${group.count}: ${who}`,
		onclick: () => ctx.toggleReaction(message, group.emoji, (group.reactedByMe = !group.reactedByMe)),
	}, `${group.emoji} ${group.count}`);
}

function emojiPicker(message, ctx) {
	const picker = el("div", { class: "emoji-picker", role: "group", "aria-label": "Pick a reaction", hidden: true },
		QUICK_EMOJI.map((emoji) => btn({ "aria-label": `React with ${emoji}`,
			onclick: () => {
				picker.hidden = true;
				const mine = message.reactions.some((g) => g.emoji === emoji && g.reactedByMe);
				ctx.toggleReaction(message, emoji, !mine);
			},
		}, emoji)));
	return picker;
}

/** ctx: as ThreadView.context(inPanel) makes it. */
export function renderMessage(message, ctx) {
	const mine = message.author?.id === ctx.me.id;
	const deleted = Boolean(message.deletedAt);
	const admin = ADMIN_ROLES.has(ctx.role);
	const picker = deleted ? null : emojiPicker(message, ctx);
	const actions = deleted ? null : el("div", { class: "actions", role: "toolbar", "aria-label": "Message actions" },
		btn({ "aria-label": "Add reaction", "aria-expanded": "false",
			onclick: (e) => { toggle(picker, e.currentTarget); if (!picker.hidden) picker.firstChild.focus(); } }, "☺"),
		ctx.inPanel ? null : btn({ onclick: () => ctx.openReplies(message) }, "Reply"),
		mine ? btn({ onclick: () => ctx.startEdit(message) }, "Edit") : null,
		mine || admin ? btn({ onclick: () => ctx.remove(message) }, "Delete") : null,
		admin ? btn({ onclick: () => ctx.pin(message, !message.pinned) },
			message.pinned ? "Unpin" : "Pin") : null);
	const name = message.author?.displayName ?? "Deleted user";
	return el("article", {
		class: `msg${mine ? " mine" : ""}${deleted ? " deleted" : ""}${message.pending ? " pending" : ""}`,
		id: ctx.inPanel ? null : `m-${message.id}`,
		dataset: { id: message.id, seq: message.seq ?? "" },
		tabindex: "-1", "aria-label": `${name}, ${fullTime(message.createdAt)}`,
	},
	el("header", {},
		message.author ? el("span", { class: "dot", dataset: { presence: message.author.id, status: ctx.presenceOf(message.author.id) }, "aria-hidden": "true" }) : null,
		el("strong", { class: "author" }, name),
		el("time", { datetime: message.createdAt, title: fullTime(message.createdAt) }, shortTime(message.createdAt)),
		message.pinned ? el("span", { class: "pin-mark", title: "Pinned" }, "📌") : null,
		message.editedAt && !deleted ? btn({ class: "edited", "aria-expanded": "false", title: `Edited ${fullTime(message.editedAt)}`,
			onclick: (e) => ctx.showHistory(message, e.currentTarget),
		}, "(edited)") : null),
	el("p", { class: "body" }, deleted ? "This message was deleted." : bodyWithMentions(message)),
	message.attachments.length && !deleted ? el("div", { class: "attachments" }, message.attachments.map(attachmentView)) : null,
	message.reactions.length && !deleted ? el("div", { class: "reactions" }, message.reactions.map((g) => reactionChip(message, g, ctx))) : null,
	message.replyCount && !ctx.inPanel ? btn({ class: "reply-count", onclick: () => ctx.openReplies(message) },
		`${message.replyCount} ${message.replyCount === 1 ? "reply" : "replies"}`) : null,
	picker, actions,
	message.pending ? el("p", { class: "send-state", role: "status" }, message.failed
		? [`Not sent${message.error ? `: ${message.error}` : ""}. `, btn({ onclick: () => ctx.retry(message) }, "Retry")]
		: "Sending…") : null);
}

/** The earlier versions of a message, fetched on demand. */
export function historyList(edits) {
	return el("ol", { class: "history", "aria-label": "Earlier versions" },
		edits.map((edit) => el("li", {},
			el("time", { datetime: edit.editedAt }, fullTime(edit.editedAt)), " ", edit.previousBody)));
}

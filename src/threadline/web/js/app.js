// The page: sign in, then the thread list beside the open thread, both kept live over
// one WebSocket. window.threadline exposes the state for debugging and the browser tests.
import { Api, GraphQLError } from "./api.js";
import { signIn } from "./auth.js";
import { Live } from "./live.js";
import * as Q from "./queries.js";
import { ThreadList } from "./thread_list.js";
import { ThreadView } from "./thread_view.js";
import { el } from "./util.js";

const $ = (id) => document.getElementById(id);
const app = { metrics: {}, activeId: null };
window.threadline = app;

app.openThread = (threadId) => {
	app.activeId = threadId;
	history.replaceState(null, "", `#/t/${threadId}`);
	document.body.classList.add("show-thread"); // phones show one pane at a time
	app.threads.render();
	app.view.open(threadId);
};

// Left, removed or deleted: said live, or by a refusal of its stream on a reconnect.
app.gone = (id) => {
	app.threads.remove(id);
	if (app.activeId !== id) return;
	app.activeId = null;
	app.view.close();
	$("thread").replaceChildren(el("p", { class: "placeholder" }, "You are no longer in that thread."));
};

app.showList = () => {
	document.body.classList.remove("show-thread");
	$("threads").querySelector("[aria-current], button.thread")?.focus();
};

async function main() {
	const config = JSON.parse($("config").textContent);
	const session = await signIn(config, $("signin"));
	app.api = new Api(session.getToken);
	app.api.onUnauthenticated = () => session.signOut();
	// A function: every reconnect asks for a fresh token.
	app.live = new Live(`${location.origin.replace(/^http/, "ws")}/graphql`, async () => ({ authorization: `Bearer ${await session.getToken()}` }));
	try {
		app.me = (await app.api.request(Q.ME)).me;
	} catch (error) {
		if (error instanceof GraphQLError && error.code === "UNAUTHENTICATED") return; // signing out
		$("signin").replaceChildren(el("p", { class: "error", role: "alert" }, `The server did not answer: ${error.message}`));
		return;
	}
	$("signin").hidden = true;
	$("chat").hidden = false;
	$("me").textContent = app.me.displayName;
	$("signout").addEventListener("click", () => { app.live.stop(); session.signOut(); });
	app.threads = new ThreadList($("threads"), app);
	app.view = new ThreadView($("thread"), app);

	app.live.addEventListener("status", ({ detail }) => {
		$("banner").hidden = detail.connected;
		$("banner").textContent = detail.connected ? "" : "Connection lost. Reconnecting…";
		document.body.classList.toggle("offline", !detail.connected);
		app.metrics.connected = detail.connected;
	});
	app.live.addEventListener("signedout", () => session.signOut());
	app.live.subscribe(Q.VIEWER_EVENTS, {}, {
		next: (data) => {
			const event = data?.viewerEventsWithResync; // null: the stream failed
			if (!event) return;
			// No replay: the list is fetched once the stream listens, and after a gap (resyncs).
			if (event.__typename === "ViewerResync") return app.threads.load().catch(() => {});
			if (event.__typename !== "ThreadMembershipChanged" || event.role) return event.thread && app.threads.upsert(event.thread);
			app.gone(event.threadId);
		},
	});
	app.live.start();
	await app.threads.load(); // shown before the socket is up
	const wanted = /^#\/t\/(.+)$/.exec(location.hash)?.[1];
	if (wanted && app.threads.threads.has(wanted)) app.openThread(wanted);
}

main();

// Sign-in. Development: pick a user, get a token from /dev/token (present only while
// development tokens are on). Production: Clerk's frontend supplies session tokens.
import { btn, el } from "./util.js";

const TOKEN_KEY = "threadline.devToken"; // per tab, so two tabs can be two users
const RECENT_KEY = "threadline.recentUsers";
const DEMO_USERS = ["alice", "bob", "carol"];

/** Resolves to {getToken, signOut} once someone is signed in. */
export function signIn(config, screen) {
	if (config.auth === "development") return developmentSignIn(screen);
	if (config.auth === "clerk") return clerkSignIn(config, screen);
	screen.replaceChildren(
		el("h1", {}, "Sign-in is not configured"),
		el("p", {}, "Set CLERK_PUBLISHABLE_KEY on the server (Clerk's publishable key, pk_...)."),
	);
	return new Promise(() => {});
}

function storedToken() {
	try {
		const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY));
		return saved && saved.expiresAt * 1000 > Date.now() + 60000 ? saved : null;
	} catch {
		return null;
	}
}

function developmentSignIn(screen) {
	const signOut = () => {
		sessionStorage.removeItem(TOKEN_KEY);
		location.reload();
	};
	// An expired development token cannot be refreshed: back to the picker.
	const session = (saved) => ({ getToken: async () => (storedToken() ? saved.token : signOut()), signOut });
	const saved = storedToken();
	if (saved) return Promise.resolve(session(saved));
	return new Promise((resolve) => {
		const recent = JSON.parse(localStorage.getItem(RECENT_KEY) || "null") || DEMO_USERS;
		const input = el("input", { id: "dev-username", name: "username", required: true, autocomplete: "username", pattern: "[A-Za-z0-9_.\\-]{1,64}" });
		const error = el("p", { class: "error", role: "alert" });
		const choose = async (username) => {
			error.textContent = "";
			const response = await fetch("/dev/token", {
				method: "POST",
				headers: { "content-type": "application/json" },
				body: JSON.stringify({ username }),
			}).catch(() => null);
			const body = response && (await response.json().catch(() => null));
			if (!response?.ok || !body?.token) {
				error.textContent = body?.error?.message ?? "The server did not answer; try again.";
				return;
			}
			sessionStorage.setItem(TOKEN_KEY, JSON.stringify(body));
			const names = [username, ...recent.filter((n) => n !== username)].slice(0, 8);
			localStorage.setItem(RECENT_KEY, JSON.stringify(names));
			resolve(session(body));
		};
		screen.replaceChildren(
			el("h1", {}, "Threadline"),
			el("p", {}, "Development sign-in: pick a user (created on first use)."),
			el("ul", { class: "picker" }, recent.map((name) =>
				el("li", {}, btn({ onclick: () => choose(name) }, name)))),
			el("form", { onsubmit: (e) => { e.preventDefault(); choose(input.value.trim()); } },
				el("label", { for: "dev-username" }, "Another user"), input,
				el("button", { type: "submit" }, "Sign in")),
			error,
		);
	});
}

async function clerkSignIn(config, screen) {
	// Clerk's own script, from the frontend API of the configured publishable key.
	await new Promise((resolve, reject) => {
		const script = el("script", {
			src: `https://${config.clerkFrontendApi}/npm/@clerk/clerk-js@5/dist/clerk.browser.js`,
			crossorigin: "anonymous",
			"data-clerk-publishable-key": config.publishableKey,
			onload: resolve,
			onerror: () => reject(new Error("Clerk could not be loaded")),
		});
		document.head.append(script);
	}).catch((error) => {
		screen.replaceChildren(el("p", { class: "error", role: "alert" }, error.message));
		throw error;
	});
	const clerk = window.Clerk;
	await clerk.load();
	if (!clerk.user) {
		const mount = el("div");
		screen.replaceChildren(el("h1", {}, "Threadline"), mount);
		clerk.mountSignIn(mount);
		await new Promise((resolve) => clerk.addListener(({ user }) => user && resolve()));
		clerk.unmountSignIn(mount);
	}
	return {
		// Clerk refreshes its 60-second session tokens; ask it every time.
		getToken: () => clerk.session.getToken(),
		signOut: () => clerk.signOut().then(() => location.reload()),
	};
}

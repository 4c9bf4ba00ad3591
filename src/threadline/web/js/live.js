// The live half of our GraphQL client: subscriptions over the graphql-transport-ws
// protocol, one WebSocket for all of them, reconnecting with backoff. Each
// subscription's variables are a function, asked again on every (re)subscribe, so a
// thread's subscription resumes with `afterSeq` = the last seq the page has seen.

const PROTOCOL = "graphql-transport-ws";
const ACK_TIMEOUT_MS = 10000;

export class Live extends EventTarget {
	/** getParams: async () => connection_init payload (a fresh token on every connect). */
	constructor(url, getParams) {
		super();
		this.url = url;
		this.getParams = getParams;
		this.subscriptions = new Map(); // id -> {query, variables, sink}
		this.nextId = 1;
		this.socket = null;
		this.ready = false;
		this.attempt = 0;
		this.stopped = false;
	}

	start() {
		this.stopped = false;
		this.connect();
	}

	stop() {
		this.stopped = true;
		clearTimeout(this.retryTimer);
		this.socket?.close(1000, "signed out");
	}

	/** sink: {next(data), error(errors)}; returns a function that unsubscribes. */
	subscribe(query, variables, sink) {
		const subscription = { query, variables, sink };
		this.start_(subscription);
		return () => {
			const { id } = subscription;
			subscription.off = true;
			if (this.subscriptions.delete(id) && this.ready) this.socket.send(JSON.stringify({ id, type: "complete" }));
		};
	}

	start_(subscription) {
		subscription.id = String(this.nextId++);
		this.subscriptions.set(subscription.id, subscription);
		if (this.ready) this.send(subscription.id);
	}

	/** CONFLICT: dropped for falling behind; it subscribes again at once. */
	fellBehind(id, errors) {
		const subscription = this.subscriptions.get(id);
		if (!subscription || !errors?.some((e) => e.extensions?.code === "CONFLICT")) return false;
		subscription.resume = true;
		return true;
	}

	send(id) {
		const { query, variables } = this.subscriptions.get(id);
		const payload = { query, variables: typeof variables === "function" ? variables() : variables };
		this.socket.send(JSON.stringify({ id, type: "subscribe", payload }));
	}

	setStatus(connected) {
		this.dispatchEvent(new CustomEvent("status", { detail: { connected } }));
	}

	async connect() {
		if (this.stopped) return;
		let params;
		try {
			params = await this.getParams();
		} catch {
			this.retry();
			return;
		}
		const socket = new WebSocket(this.url, PROTOCOL);
		this.socket = socket;
		const ackTimer = setTimeout(() => socket.close(4408, "no connection_ack"), ACK_TIMEOUT_MS);
		socket.onopen = () => socket.send(JSON.stringify({ type: "connection_init", payload: params }));
		socket.onmessage = (event) => {
			const message = JSON.parse(event.data);
			switch (message.type) {
				case "connection_ack":
					clearTimeout(ackTimer);
					this.ready = true;
					this.attempt = 0;
					for (const id of this.subscriptions.keys()) this.send(id);
					this.setStatus(true);
					break;
				case "ping":
					socket.send(JSON.stringify({ type: "pong" }));
					break;
				case "next":
					if (!this.fellBehind(message.id, message.payload.errors)) {
						this.subscriptions.get(message.id)?.sink.next(message.payload.data, message.payload.errors);
					}
					break;
				case "error":
				case "complete": {
					const subscription = this.subscriptions.get(message.id);
					if (!subscription) break;
					const behind = this.fellBehind(message.id, message.payload) || subscription.resume;
					subscription.resume = false;
					this.subscriptions.delete(message.id);
					if (message.type === "error" && !behind) subscription.sink.error?.(message.payload);
					// Ended by the server, still wanted: again (a new id), paused unless it fell behind.
					else setTimeout(() => subscription.off || this.start_(subscription), behind ? 0 : 1000 + Math.random() * 2000);
					break;
				}
			}
		};
		socket.onclose = (event) => {
			clearTimeout(ackTimer);
			if (this.socket !== socket) return;
			const wasReady = this.ready;
			this.ready = false;
			if (wasReady) this.setStatus(false);
			// 4401: the session ended or the user was deleted: only signing in again helps.
			if (event.code === 4401) {
				this.stopped = true;
				this.dispatchEvent(new CustomEvent("signedout"));
				return;
			}
			this.retry(event.code === 4429 ? 30000 : 0);
		};
	}

	retry(minimumMs = 0) {
		if (this.stopped) return;
		this.attempt += 1;
		// Exponential backoff with jitter, so that a restarted server is not stampeded.
		const backoff = Math.min(10000, 250 * 2 ** Math.min(this.attempt, 6));
		const delay = Math.max(minimumMs, backoff / 2 + Math.random() * (backoff / 2));
		clearTimeout(this.retryTimer);
		this.retryTimer = setTimeout(() => this.connect(), delay);
	}
}

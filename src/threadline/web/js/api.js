// The HTTP half of our GraphQL client: queries and mutations with fetch, uploads as
// GraphQL multipart requests (with progress, which fetch cannot report).

export class GraphQLError extends Error {
	constructor(errors) {
		super(errors.map((e) => e.message).join("; "));
		this.errors = errors;
		this.code = errors[0]?.extensions?.code ?? "UNKNOWN";
	}
}

/** The request never got an answer (offline, server down): safe to retry with the same clientId. */
export class NetworkError extends Error {}

export class Api {
	/** getToken: async () => string | null, asked before every request (Clerk tokens live 60 s). */
	constructor(getToken, url = "/graphql") {
		this.getToken = getToken;
		this.url = url;
	}

	async headers(extra = {}) {
		const token = await this.getToken();
		return token ? { ...extra, authorization: `Bearer ${token}` } : extra;
	}

	async request(query, variables = {}) {
		let response;
		try {
			response = await fetch(this.url, {
				method: "POST",
				headers: await this.headers({ "content-type": "application/json" }),
				body: JSON.stringify({ query, variables }),
			});
		} catch (error) {
			throw new NetworkError(error.message);
		}
		if (response.status >= 502 && response.status <= 504) throw new NetworkError(response.statusText);
		let body;
		try {
			body = await response.json();
		} catch {
			throw new NetworkError(`HTTP ${response.status}`);
		}
		if (body.errors?.length) {
			const error = new GraphQLError(body.errors);
			// A token the server no longer accepts (expired, secret rotated): sign in again.
			if (error.code === "UNAUTHENTICATED") this.onUnauthenticated?.();
			throw error;
		}
		return body.data;
	}

	/** uploadAttachment over the multipart request spec; onProgress(fraction). */
	async upload(threadId, file, onProgress, query) {
		const form = new FormData();
		form.append("operations", JSON.stringify({ query, variables: { threadId, file: null } }));
		form.append("map", JSON.stringify({ 0: ["variables.file"] }));
		form.append("0", file, file.name);
		// The server refuses multipart POSTs without this header (CSRF protection).
		const headers = await this.headers({ "apollo-require-preflight": "true" });
		return new Promise((resolve, reject) => {
			const xhr = new XMLHttpRequest();
			xhr.open("POST", this.url);
			for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
			xhr.upload.onprogress = (e) => e.lengthComputable && onProgress?.(e.loaded / e.total);
			xhr.onerror = () => reject(new NetworkError("upload failed"));
			xhr.onload = () => {
				let body;
				try {
					body = JSON.parse(xhr.responseText);
				} catch {
					reject(new GraphQLError([{ message: `upload refused (HTTP ${xhr.status})` }]));
					return;
				}
				if (body.errors?.length) reject(new GraphQLError(body.errors));
				else resolve(body.data.uploadAttachment);
			};
			xhr.send(form);
		});
	}
}

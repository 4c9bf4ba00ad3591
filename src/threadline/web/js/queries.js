// Every GraphQL document the page sends, in one place: the reference for front-end teams.

const USER = "id username displayName";
const REACTIONS = "reactions { emoji count reactedByMe users { id displayName } }";
const MESSAGE = `fragment Msg on Message {
	id seq body clientId createdAt editedAt deletedAt pinned replyCount
	parent { id }
	author { ${USER} }
	${REACTIONS}
	attachments { id filename size kind url previewUrl width height }
	mentions { username }
}`;
const MESSAGE_PAGE = "pageInfo { hasPreviousPage startCursor } edges { node { ...Msg } }";
const THREAD_ITEM = `fragment ThreadItem on Thread {
	id title isDirect lastMessageAt updatedAt lastSeq unreadCount lastReadSeq myRole
	lastMessage { id body deletedAt attachments { id } author { id displayName } }
}`;

export const ME = `{ me { ${USER} } }`;

export const THREADS = `query Threads($after: String) {
	threads(first: 50, after: $after) { pageInfo { hasNextPage endCursor } edges { node { ...ThreadItem } } }
} ${THREAD_ITEM}`;

export const THREAD = `query Thread($t: ID!) {
	thread(threadId: $t) {
		title lastSeq lastReadSeq myRole
		participants(first: 100) {
			edges { node { lastReadSeq user { ${USER} presence { status } } } }
		}
		pinnedMessages { ...Msg }
		messages(last: 50) { ${MESSAGE_PAGE} }
	}
} ${MESSAGE}`;

export const OLDER = `query Older($t: ID!, $before: String) {
	messages(threadId: $t, last: 50, before: $before) {
		${MESSAGE_PAGE}
	}
} ${MESSAGE}`;

export const REPLIES = `query Replies($m: ID!) {
	message(messageId: $m) { ...Msg replies(last: 100) { edges { node { ...Msg } } } }
} ${MESSAGE}`;

export const EDITS = `query Edits($m: ID!) {
	message(messageId: $m) { edits { previousBody editedAt } }
}`;

export const USERS = `query Users($s: String) {
	users(search: $s, first: 10) { edges { node { ${USER} } } }
}`;

export const SEND = `mutation Send($i: SendMessageInput!) { sendMessage(input: $i) { ...Msg } } ${MESSAGE}`;
export const EDIT = `mutation Edit($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { ...Msg } } ${MESSAGE}`;
export const DELETE = `mutation Delete($m: ID!) { deleteMessage(messageId: $m) { ...Msg } } ${MESSAGE}`;
export const PIN = `mutation Pin($m: ID!, $p: Boolean!) { pinMessage(messageId: $m, pinned: $p) { ...Msg } } ${MESSAGE}`;
export const REACT = `mutation React($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { ...Msg } } ${MESSAGE}`;
export const UNREACT = `mutation Unreact($m: ID!, $e: String!) { removeReaction(messageId: $m, emoji: $e) { ...Msg } } ${MESSAGE}`;
export const MARK_READ = `mutation MarkRead($t: ID!, $s: Int!) { markRead(threadId: $t, seq: $s) { ...ThreadItem } } ${THREAD_ITEM}`;
export const TYPING = `mutation Typing($t: ID!, $on: Boolean!) { setTyping(threadId: $t, isTyping: $on) }`;
export const CREATE_THREAD = `mutation CreateThread($i: CreateThreadInput!) { createThread(input: $i) { ...ThreadItem } } ${THREAD_ITEM}`;
export const CREATE_DIRECT = `mutation Direct($u: ID!) { createDirectThread(userId: $u) { ...ThreadItem } } ${THREAD_ITEM}`;
export const UPLOAD = `mutation Upload($threadId: ID!, $file: Upload!) {
	uploadAttachment(threadId: $threadId, file: $file) { id }
}`;

export const THREAD_EVENTS = `subscription Events($t: ID!, $after: Int) {
	threadEvents(threadId: $t, afterSeq: $after) {
		__typename seq
		... on MessageCreated { message { ...Msg } }
		... on MessageEdited { message { ...Msg } }
		... on MessageDeleted { messageId }
		... on ReactionChanged { messageId ${REACTIONS} }
		... on MessagePinned { pinned message { ...Msg } }
		... on ParticipantChanged { role user { ${USER} presence { status } } }
		... on ThreadUpdated { thread { title } }
	}
} ${MESSAGE}`;

export const THREAD_ACTIVITY = `subscription Activity($t: ID!) {
	threadActivity(threadId: $t) {
		__typename
		... on TypingChanged { isTyping user { id displayName } }
		... on ReceiptChanged { lastReadSeq user { id } }
	}
}`;

export const PRESENCE = `subscription Presence($ids: [ID!]!) {
	presence(userIds: $ids) { user { id } presence { status } }
}`;

export const VIEWER_EVENTS = `subscription Viewer {
	viewerEventsWithResync {
		__typename
		... on ThreadActivityForViewer { thread { ...ThreadItem } }
		... on ThreadMembershipChanged { threadId role thread { ...ThreadItem } }
	}
} ${THREAD_ITEM}`;

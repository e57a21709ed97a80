// The chat list and the open chat: its log of messages, live updates, read receipts.
import { $, formatTime, h, replaceChildren } from "./dom.js";
import { markSeen, renderMessage } from "./messages.js";
import { can, chatTitle, guard, notify, state } from "./state.js";
import { deleteMessage, download, resetComposerMode, startEdit, startReply } from "./compose.js";
import { renderRequests } from "./groups.js";
import { loadScheduled, openReport } from "./panels.js";

const PAGE = 50; // messages per history page

// ---------------------------------------------------------------- chat list

/** Block or unblock the other person of the open direct chat. */
export async function toggleBlock() {
  const chat = state.chats.get(state.open);
  if (chat?.kind !== "direct") return;
  const peer = chatTitle(chat);
  const blocking = !state.blocked.has(peer.toLowerCase());
  await state.api.call(blocking ? "users.block" : "users.unblock", { username: peer });
  if (blocking) state.blocked.add(peer.toLowerCase());
  else state.blocked.delete(peer.toLowerCase());
  notify(blocking ? `You block ${peer}: they can no longer write to you here.`
    : `You no longer block ${peer}.`, "info");
  renderChatHead();
}

export async function loadBlocked() {
  if (!can("users.blocked")) return;
  const { usernames } = await state.api.call("users.blocked");
  state.blocked = new Set(usernames.map((u) => u.toLowerCase()));
  renderChatHead();
}

export async function refreshChats() {
  const status = await state.api.call("session.status");
  state.chats = new Map(status.chats.map((c) => [c.chat_id, c]));
  if (status.banned_until) showBan(status.banned_until);
  renderChatList();
  if (state.open !== null && !state.chats.has(state.open)) {
    await openChat("general"); // we left it, or were removed
  } else {
    renderChatHead();
  }
}

export function renderChatList() {
  const items = [...state.chats.values()].map((chat) => {
    const title = chatTitle(chat);
    const unread = state.unread.get(chat.chat_id) || 0;
    const asking = state.requests.get(chat.chat_id)?.size || 0;
    return h("li", {},
      h("button", {
        type: "button",
        class: "chat-item",
        "aria-current": chat.chat_id === state.open ? "true" : null,
        onclick: guard(() => openChat(chat.chat_id)),
      },
      h("span", { class: `avatar ${chat.kind}`, "aria-hidden": "true" },
        chat.kind === "general" ? "#" : title.charAt(0).toUpperCase()),
      h("span", { class: "chat-name" }, title),
      asking ? h("span", { class: "badge asking" }, `${asking} asking`) : null,
      unread ? h("span", { class: "badge" }, String(unread),
        h("span", { class: "visually-hidden" }, " unread")) : null));
  });
  replaceChildren($("chat-list"), items);
}

function renderChatHead() {
  const chat = state.open === null ? null : state.chats.get(state.open);
  const owner = chat?.kind === "group" && chat.owner === state.me;
  if (chat === null || chat === undefined) {
    $("chat-title").textContent = state.draftTo || "";
    $("chat-members").textContent = "New direct chat: your first message starts it.";
  } else {
    $("chat-title").textContent = chatTitle(chat);
    const n = chat.members.length;
    $("chat-members").textContent = chat.kind === "direct"
      ? "Direct chat"
      : chat.kind === "group"
        ? `${n} member${n === 1 ? "" : "s"}: ${chat.members.slice(0, 12).join(", ")}` +
          `${n > 12 ? "…" : ""} · owner ${chat.owner}`
        : "Everyone on this server";
  }
  $("leave-chat").hidden = !chat || chat.kind === "general";
  const peer = chat?.kind === "direct" ? chatTitle(chat) : null;
  $("block-user").hidden = !peer || !can("users.block");
  $("block-user").textContent = peer && state.blocked.has(peer.toLowerCase()) ? "Unblock" : "Block";
  $("owner-tools").hidden = !owner;
  renderRequests();
}

// ---------------------------------------------------------------- the open chat

function forgetLink() {
  $("share-link").hidden = true; // a join link belongs to the chat it was made in
  $("share-link").value = "";
}

export async function openChat(chatId) {
  const seq = ++state.openSeq;
  forgetLink();
  state.open = chatId;
  state.draftTo = null;
  state.unread.delete(chatId);
  resetComposerMode();
  state.messages = [];
  state.byId.clear();
  state.more = false;
  renderChatList();
  renderChatHead();
  renderLog();
  const page = await state.api.call("messages.history", { chat_id: chatId, limit: PAGE });
  if (seq !== state.openSeq) return; // another chat was opened meanwhile
  const loaded = new Set(page.messages.map((m) => m.message_id));
  const live = state.messages.filter((m) => !loaded.has(m.message_id)); // arrived meanwhile
  setMessages([...page.messages, ...live]);
  state.more = page.more;
  renderLog();
  scrollToEnd();
  markRead();
}

export function openDraft(username) {
  const existing = [...state.chats.values()].find((c) =>
    c.kind === "direct" && chatTitle(c).toLowerCase() === username.toLowerCase());
  if (existing) return openChat(existing.chat_id);
  ++state.openSeq;
  forgetLink();
  state.open = null;
  state.draftTo = username;
  resetComposerMode();
  setMessages([]);
  state.more = false;
  renderChatList();
  renderChatHead();
  renderLog();
  $("compose").focus();
  return undefined;
}

function setMessages(list) {
  state.messages = list;
  state.byId = new Map(list.map((m) => [m.message_id, m]));
  for (const m of list) state.counted.add(m.message_id);
}

function messageContext() {
  const chat = state.chats.get(state.open);
  return {
    me: state.me,
    byId: state.byId,
    can,
    isOwner: chat?.kind === "group" && chat.owner === state.me,
    onReply: startReply,
    onEdit: startEdit,
    onDelete: guard(deleteMessage),
    onReport: openReport,
    onDownload: guard(download),
  };
}

function renderLog() {
  const ctx = messageContext();
  state.elements = new Map();
  const articles = state.messages.map((m) => {
    const el = renderMessage(m, ctx);
    state.elements.set(m.message_id, el);
    return el;
  });
  const empty = state.messages.length === 0
    ? h("p", { class: "empty muted" }, state.draftTo ? "Say hello." : "No messages yet.")
    : null;
  replaceChildren($("log"), articles, empty);
  $("older").hidden = !state.more;
  renderSeen();
}

const nearEnd = () => {
  const log = $("log");
  return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
};
const scrollToEnd = () => { $("log").scrollTop = $("log").scrollHeight; };

export function appendMessage(m) {
  if (state.byId.has(m.message_id)) return undefined;
  const list = state.messages;
  const last = list[list.length - 1];
  const at = (x) => Date.parse(x.sent_at);
  if (last && at(m) < at(last)) {
    // A backlog event older than the newest shown: put it in its place, or leave it to
    // "Show older" when it is older than the whole loaded page.
    if (state.more && at(m) < at(list[0])) return undefined;
    setMessages([...list, m].sort((a, b) => at(a) - at(b)));
    return renderLog();
  }
  const follow = nearEnd();
  list.push(m);
  state.byId.set(m.message_id, m);
  if (list.length === 1) return renderLog();
  const el = renderMessage(m, messageContext());
  state.elements.set(m.message_id, el);
  $("log").append(el);
  if (follow || m.author === state.me) scrollToEnd();
  return undefined;
}

export async function showOlder() {
  const oldest = state.messages[0];
  if (!oldest || state.open === null) return;
  const seq = state.openSeq;
  const page = await state.api.call("messages.history",
    { chat_id: state.open, before: oldest.message_id, limit: PAGE });
  if (seq !== state.openSeq) return;
  const log = $("log");
  const fromEnd = log.scrollHeight - log.scrollTop;
  setMessages([...page.messages, ...state.messages]);
  state.more = page.more;
  renderLog();
  log.scrollTop = log.scrollHeight - fromEnd; // keep what the reader was looking at in place
}

export function replaceMessage(m) {
  if (!state.byId.has(m.message_id)) return;
  state.messages = state.messages.map((old) => (old.message_id === m.message_id ? m : old));
  state.byId.set(m.message_id, m);
  const el = renderMessage(m, messageContext());
  state.elements.get(m.message_id)?.replaceWith(el);
  state.elements.set(m.message_id, el);
  renderSeen();
}

export function removeMessage(messageId) {
  if (!state.byId.has(messageId)) return;
  state.messages = state.messages.filter((m) => m.message_id !== messageId);
  state.byId.delete(messageId);
  state.elements.get(messageId)?.remove();
  state.elements.delete(messageId);
}

function renderSeen() {
  const chat = state.chats.get(state.open);
  const upTo = state.peerRead.get(state.open);
  if (chat?.kind === "direct" && upTo) markSeen(state.messages, state.elements, state.me, upTo);
}

let readTimer = 0;

/** Tell the server (and, in a direct chat, the other person) what we have seen. */
export function markRead() {
  if (!can("chats.read") || state.open === null || document.hidden) return;
  clearTimeout(readTimer);
  readTimer = setTimeout(guard(async () => {
    const chatId = state.open;
    const last = [...state.messages].reverse().find((m) => m.author !== state.me);
    if (!last || state.readSent.get(chatId) === last.message_id) return;
    state.readSent.set(chatId, last.message_id);
    await state.api.call("chats.read", { chat_id: chatId, message_id: last.message_id });
  }), 300);
}

/** A new message; true when the chat list must be reloaded (a chat we do not know yet). */
export function onMessage(m) {
  const known = state.chats.has(m.chat_id);
  const fresh = !state.counted.has(m.message_id);
  state.counted.add(m.message_id);
  if (m.chat_id === state.open) {
    appendMessage(m);
    if (m.author !== state.me) markRead();
  } else if (fresh && m.author !== state.me) {
    state.unread.set(m.chat_id, (state.unread.get(m.chat_id) || 0) + 1);
    renderChatList();
  }
  const due = state.scheduled.some((s) => Date.parse(s.send_at) <= Date.now() + 2000);
  if (m.author === state.me && due) {
    guard(loadScheduled)(); // one of ours just went out
  }
  return !known;
}

export function onRead(event) {
  if (event.username === state.me) {
    state.unread.delete(event.chat_id); // read on another of our clients
    renderChatList();
    return;
  }
  state.peerRead.set(event.chat_id, event.message_id);
  if (event.chat_id === state.open) renderSeen();
}

export function showBan(until) {
  if (Date.parse(until) > Date.now()) {
    notify(`You are banned from sending until ${formatTime(until)}.`);
  }
}

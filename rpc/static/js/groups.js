// Group chats: create, invite, join links, join requests, leave.
import { $, h, replaceChildren } from "./dom.js";
import { chatTitle, guard, notify, state, store } from "./state.js";
import { openChat, refreshChats, renderChatList } from "./chat.js";

// ---------------------------------------------------------------- groups

export async function createGroup(event) {
  event.preventDefault();
  const title = $("group-title").value.trim();
  if (!title) return;
  const { chat } = await state.api.call("chats.create", { title });
  $("group-title").value = "";
  await refreshChats();
  await openChat(chat.chat_id);
}

export async function invite(event) {
  event.preventDefault();
  const username = $("invite-name").value.trim();
  if (!username || state.open === null) return;
  await state.api.call("chats.invite", { chat_id: state.open, username });
  $("invite-name").value = "";
  notify(`${username} was added to the group.`, "info");
  await refreshChats();
}

export async function makeLink() {
  const chatId = state.open;
  const { link } = await state.api.call("chats.link", { chat_id: chatId });
  if (chatId !== state.open) return;
  const field = $("share-link");
  field.value = `${location.origin}/#join=${encodeURIComponent(link)}`;
  field.hidden = false;
  field.select();
}

function linkToken(text) {
  const value = text.trim();
  const at = value.indexOf("#join=");
  return at >= 0 ? decodeURIComponent(value.slice(at + 6)) : value;
}

export async function join(event) {
  event?.preventDefault();
  const link = linkToken($("join-link").value);
  if (!link) return;
  const result = await state.api.call("chats.join", { link });
  $("join-link").value = "";
  if (result.status === "member") {
    await refreshChats();
    await openChat(result.chat_id);
  } else {
    notify("Request sent: you will be added when the owner approves.", "info");
  }
}

/** Opened from a shared link (/#join=...): ask to join once signed in. */
export async function joinFromAddress() {
  if (!location.hash.startsWith("#join=")) return;
  $("join-link").value = location.hash;
  history.replaceState(null, "", "/");
  await join(null);
}

function requestsKey() {
  return `requests:${state.me}`;
}

export function loadRequests() {
  try {
    const saved = JSON.parse(store.getItem(requestsKey()) || "{}");
    state.requests = new Map(Object.entries(saved).map(([k, v]) => [k, new Set(v)]));
  } catch {
    state.requests = new Map();
  }
}

function saveRequests() {
  const plain = Object.fromEntries([...state.requests].map(([k, v]) => [k, [...v]]));
  store.setItem(requestsKey(), JSON.stringify(plain));
}

export function addRequest(chatId, username) {
  if (!state.requests.has(chatId)) state.requests.set(chatId, new Set());
  state.requests.get(chatId).add(username);
  saveRequests();
  const chat = state.chats.get(chatId);
  notify(`${username} asks to join ${chat ? chatTitle(chat) : "your group"}.`, "info");
  renderChatList();
  renderRequests();
}

export function renderRequests() {
  const asking = [...(state.requests.get(state.open) || [])];
  $("requests-heading").hidden = asking.length === 0;
  replaceChildren($("request-list"), asking.map((username) => h("li", { class: "request" },
    h("span", {}, `${username} wants to join`),
    h("button", { type: "button", onclick: guard(() => decide(username, true)) }, "Approve"),
    h("button", { type: "button", class: "quiet", onclick: guard(() => decide(username, false)) },
      "Decline"))));
}

async function decide(username, approve) {
  const chatId = state.open;
  try {
    await state.api.call(approve ? "chats.approve" : "chats.decline",
      { chat_id: chatId, username });
  } finally {
    state.requests.get(chatId)?.delete(username);
    saveRequests();
    renderRequests();
    renderChatList();
  }
  if (approve) await refreshChats();
}

export async function leaveChat() {
  if (state.open === null) return;
  await state.api.call("chats.leave", { chat_id: state.open });
  await refreshChats();
  await openChat("general");
}

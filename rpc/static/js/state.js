// Shared state of the page, and how failures reach the person using it.
import { Api, NetworkError, RpcError } from "./api.js";
import { $ } from "./dom.js";
import { describeError } from "./errors.js";

export const store = window.sessionStorage; // the token dies with the tab

export const state = {
  api: new Api(),
  me: null,
  features: new Set(),   // method names the server offers (from /openrpc.json)
  chats: new Map(),      // chat_id -> chat as session.status shows it
  unread: new Map(),     // chat_id -> others' messages that arrived while it was not open
  counted: new Set(),    // message ids already counted or shown (events may come twice)
  open: null,            // the open chat's id (null while writing to draftTo)
  draftTo: null,         // a username we are starting a direct chat with
  openSeq: 0,            // bumps on every open, so a slow history page cannot land late
  messages: [],          // the open chat's messages, oldest first
  byId: new Map(),
  elements: new Map(),   // message_id -> its <article>
  more: false,
  replyTo: null,
  editing: null,
  files: [],             // uploaded attachments waiting for Send
  uploading: Promise.resolve(),
  sending: false,
  draftId: newId(),      // client_msg_id: a retried Send never posts twice
  scheduled: [],
  requests: new Map(),   // chat_id -> Set of usernames asking to join
  blocked: new Set(),    // lower-cased usernames we block (users.blocked)
  peerRead: new Map(),   // chat_id -> the other member's read position (direct chats)
  readSent: new Map(),   // chat_id -> the message_id we last marked read
  reportTarget: null,
  poller: null,
};

export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // works outside https too
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export const can = (method) => state.features.has(method);
export const chatTitle = (chat) => chat.title
  || chat.members.find((name) => name !== state.me) || "(untitled)";

// ---------------------------------------------------------------- notices and errors

let noticeTimer = 0;

export function notify(text, kind = "error") {
  const box = $("notice");
  $("notice-text").textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(noticeTimer);
  if (kind === "info") noticeTimer = setTimeout(() => { box.hidden = true; }, 8000);
}

export function report(err) {
  if (err instanceof RpcError && err.code === 401) return authLost();
  if (err instanceof RpcError || err instanceof NetworkError) return notify(describeError(err));
  console.error(err); // a bug in this page
  notify(describeError(err));
}

/** Wrap an (async) handler: failures become notices, never uncaught errors. */
export const guard = (fn) => (...args) => {
  try {
    return Promise.resolve(fn(...args)).catch(report); // fn runs at once: preventDefault works
  } catch (err) {
    return report(err);
  }
};

export function authLost() {
  state.poller?.stop();
  store.clear();
  store.setItem("flash", "Your session has ended. Please sign in again.");
  location.replace("/");
}

// The browser client: sign-in, chat list, the open chat, and the live event stream.
// It uses only the public API (/rpc, /poll, /files), like any other client.
import { RpcError } from "./api.js";
import { $, localInputValue } from "./dom.js";
import { describeError } from "./errors.js";
import { Poller } from "./poller.js";
import { authLost, can, guard, notify, report, state, store } from "./state.js";
import {
  loadBlocked,
  markRead,
  onMessage,
  onRead,
  openChat,
  openDraft,
  refreshChats,
  removeMessage,
  replaceMessage,
  showBan,
  showOlder,
  toggleBlock,
} from "./chat.js";
import { cancelMode, pickFiles, schedule, send } from "./compose.js";
import {
  addRequest,
  createGroup,
  invite,
  join,
  joinFromAddress,
  leaveChat,
  loadRequests,
  makeLink,
} from "./groups.js";
import { loadScheduled, onScheduled, search, sendReport } from "./panels.js";

// ---------------------------------------------------------------- sign-in and start

async function boot() {
  bindUi();
  const token = store.getItem("token");
  const me = store.getItem("username");
  if (token && me) {
    state.api.token = token;
    state.me = me;
    const cursor = store.getItem("cursor");
    try {
      await enter(cursor === null ? null : Number(cursor));
      return;
    } catch (err) {
      if (err instanceof RpcError && err.code === 401) store.clear();
      else store.setItem("flash", describeError(err));
    }
  }
  showSignin(store.getItem("flash") || "");
  store.removeItem("flash");
}

function showSignin(message) {
  $("app-view").hidden = true;
  $("signin-view").hidden = false;
  $("signin-error").textContent = message;
  $("signin-username").focus();
}

function signinError(err) {
  if (err instanceof RpcError && err.code === 401) return "Wrong password for this username.";
  if (err instanceof RpcError && err.code === -32602) {
    if (JSON.stringify(err.data).includes("username")) {
      return "A username is 3 to 32 letters, digits or underscores.";
    }
  }
  return describeError(err);
}

async function signIn(event) {
  event.preventDefault();
  const username = $("signin-username").value.trim();
  const password = $("signin-password").value;
  if (!username || !password) {
    $("signin-error").textContent = "Enter a username and a password.";
    return;
  }
  $("signin-button").disabled = true;
  $("signin-error").textContent = "";
  try {
    const session = await state.api.call("session.connect",
      { username, password, client: "browser" });
    state.api.token = session.token;
    state.me = session.username;
    store.setItem("token", session.token);
    store.setItem("username", session.username);
    $("signin-password").value = "";
    await enter(session.cursor);
  } catch (err) {
    $("signin-error").textContent = signinError(err);
  } finally {
    $("signin-button").disabled = false;
  }
}

async function loadFeatures() {
  try {
    const response = await fetch("/openrpc.json");
    const doc = await response.json();
    return new Set(doc.methods.map((m) => m.name));
  } catch {
    return new Set();
  }
}

/** Signed in: load the chats, open the general chat, start the event stream. */
async function enter(cursor) {
  state.features = await loadFeatures();
  await refreshChats(); // throws 401 for a dead token
  $("signin-view").hidden = true;
  $("app-view").hidden = false;
  $("me").textContent = state.me;
  $("search-form").hidden = !can("messages.search");
  loadRequests();
  await openChat("general");
  guard(loadScheduled)();
  guard(loadBlocked)();
  state.poller = new Poller(state.api, cursor, {
    onEvents: handleEvents,
    onState: showConnection,
    onCursor: (c) => store.setItem("cursor", String(c)),
    onAuthLost: authLost,
  }).start();
  guard(joinFromAddress)();
}

async function signOut() {
  state.poller?.stop(); // first, so the ended session's parked poll is not an error
  try {
    await state.api.call("session.disconnect");
  } catch { /* signing out of a dead session is fine */ }
  store.clear();
  location.replace("/");
}

let wasOffline = false;

function showConnection(status, retryMs) {
  const el = $("connection");
  if (status === "online") {
    el.dataset.state = "online";
    el.textContent = "Connected";
    if (wasOffline) {
      wasOffline = false;
      guard(refreshChats)(); // chats may have changed while we were away
    }
  } else {
    wasOffline = true;
    el.dataset.state = "reconnecting";
    el.textContent = `Reconnecting… (next try in ${Math.max(1, Math.round(retryMs / 1000))} s)`;
  }
}

// ---------------------------------------------------------------- events

async function handleEvents(events) {
  let refresh = false;
  for (const event of events) {
    switch (event.type) {
      case "message":
        refresh = onMessage(event.message) || refresh;
        break;
      case "message_edited":
        if (event.message.chat_id === state.open) replaceMessage(event.message);
        break;
      case "message_deleted":
        if (event.chat_id === state.open) removeMessage(event.message_id);
        break;
      case "chat":
        refresh = true;
        break;
      case "join_request":
        addRequest(event.chat_id, event.username);
        break;
      case "join_decided":
        refresh = true;
        notify(event.approved
          ? "Your request to join was approved: the chat is in your list."
          : "Your request to join a chat was declined.", "info");
        break;
      case "scheduled":
        onScheduled(event);
        break;
      case "ban":
        showBan(event.until);
        break;
      case "read":
        onRead(event);
        break;
      default:
        break; // a newer server's event: nothing to show
    }
  }
  if (refresh) await refreshChats();
}

// ---------------------------------------------------------------- wiring

function bindUi() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", guard(signOut));
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); guard(send)(); });
  $("compose").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    } else if (e.key === "Escape") cancelMode();
  });
  $("compose").addEventListener("input", () => {
    $("compose").rows = Math.min(6, $("compose").value.split("\n").length);
  });
  $("reply-cancel").addEventListener("click", cancelMode);
  $("schedule").addEventListener("click", guard(schedule));
  $("deliver-at").min = localInputValue(0);
  $("file-input").addEventListener("change", pickFiles);
  $("older").addEventListener("click", guard(showOlder));
  $("direct-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("direct-to").value.trim();
    $("direct-to").value = "";
    if (name && name.toLowerCase() !== state.me.toLowerCase()) guard(openDraft)(name);
  });
  $("group-form").addEventListener("submit", guard(createGroup));
  $("join-form").addEventListener("submit", guard(join));
  $("invite-form").addEventListener("submit", guard(invite));
  $("make-link").addEventListener("click", guard(makeLink));
  $("leave-chat").addEventListener("click", guard(leaveChat));
  $("block-user").addEventListener("click", guard(toggleBlock));
  $("search-form").addEventListener("submit", guard(search));
  $("report-form").addEventListener("submit", guard(sendReport));
  $("report-close").addEventListener("click", () => $("report-dialog").close());
  $("notice-close").addEventListener("click", () => { $("notice").hidden = true; });
  document.addEventListener("visibilitychange", markRead);
}

boot().catch(report);

// The side panels: scheduled messages, search, and the report dialog.
import { $, formatTime, h, replaceChildren } from "./dom.js";
import { snippet } from "./messages.js";
import { chatTitle, guard, notify, report, state } from "./state.js";
import { openChat } from "./chat.js";

// ---------------------------------------------------------------- scheduled messages

export async function loadScheduled() {
  const { scheduled } = await state.api.call("messages.scheduled");
  state.scheduled = scheduled;
  renderScheduled();
}

export function addScheduled(entry) {
  if (!state.scheduled.some((s) => s.scheduled_id === entry.scheduled_id)) {
    state.scheduled.push(entry);
    state.scheduled.sort((a, b) => Date.parse(a.send_at) - Date.parse(b.send_at));
  }
  renderScheduled();
}

const NOT_SENT = {
  banned: "you were banned from sending",
  rate_limited: "you were over the general chat limit",
  not_found: "its chat, recipient or file is gone",
  forbidden: "you are no longer a member of that chat",
  blocked: "the recipient blocks you",
  too_large: "it was too large",
};

export function onScheduled(event) {
  if (event.action === "created") addScheduled(event.scheduled);
  else {
    if (event.reason && event.reason !== "cancelled") {
      const why = NOT_SENT[event.reason] || "the server refused it";
      notify(`A scheduled message was not sent: ${why}.`);
    }
    const gone = event.scheduled.scheduled_id;
    state.scheduled = state.scheduled.filter((s) => s.scheduled_id !== gone);
    renderScheduled();
  }
}

function renderScheduled() {
  $("scheduled-empty").hidden = state.scheduled.length > 0;
  replaceChildren($("scheduled-list"), state.scheduled.map((s) => {
    const chat = s.chat_id ? state.chats.get(s.chat_id) : null;
    const where = s.to || (chat ? chatTitle(chat) : "a chat");
    return h("li", { class: "scheduled" },
      h("span", { class: "when" }, `${formatTime(s.send_at)} → ${where}`),
      h("span", { class: "what" }, snippet(s.text, 40)),
      h("button", {
        type: "button",
        class: "quiet",
        onclick: guard(async () => {
          await state.api.call("messages.cancel", { scheduled_id: s.scheduled_id });
          onScheduled({ action: "cancelled", scheduled: s });
        }),
      }, "Cancel"));
  }));
}

// ---------------------------------------------------------------- search and reports

export async function search(event) {
  event.preventDefault();
  const query = $("search-query").value.trim();
  if (!query) return;
  const { messages } = await state.api.call("messages.search", { query, limit: 20 });
  $("search-results").hidden = false;
  const list = messages.map((m) => {
    const chat = state.chats.get(m.chat_id);
    return h("li", {}, h("button", {
      type: "button",
      class: "result",
      onclick: guard(() => openChat(m.chat_id)),
    }, h("span", { class: "muted" }, `${chat ? chatTitle(chat) : "chat"} · ${m.author}: `),
    snippet(m.text, 50)));
  });
  replaceChildren($("search-list"),
    list.length ? list : h("li", { class: "muted" }, "Nothing found."));
}

export function openReport(username) {
  state.reportTarget = username;
  $("report-heading").textContent = `Report ${username}`;
  $("report-reason").value = "";
  $("report-dialog").showModal();
}

export async function sendReport(event) {
  event.preventDefault();
  const username = state.reportTarget;
  const reason = $("report-reason").value.trim();
  $("report-dialog").close();
  const result = await state.api.call("users.report",
    reason ? { username, reason } : { username });
  notify(result.banned_until
    ? `Reported ${username}, now banned from sending until ${formatTime(result.banned_until)}.`
    : `Reported ${username}. Thank you.`, "info");
}

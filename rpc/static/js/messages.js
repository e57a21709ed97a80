// One message of the log, built from Text nodes only.
import { formatSize, formatTime, h } from "./dom.js";

const snippet = (text, n = 60) => {
  const t = (text || "").replace(/\s+/g, " ").trim();
  return t.length > n ? `${t.slice(0, n - 1)}…` : t || "(a file)";
};

/**
 * The <article> of a message. `ctx`: me, byId (Map of loaded messages), can(method),
 * isOwner, and the actions onReply, onEdit, onDelete, onReport, onDownload.
 */
export function renderMessage(m, ctx) {
  const mine = m.author === ctx.me;
  const meta = h("div", { class: "meta" },
    h("span", { class: "author" }, m.author),
    h("time", { datetime: m.sent_at, title: new Date(m.sent_at).toLocaleString() },
      formatTime(m.sent_at)),
    m.edited_at ? h("span", { class: "edited" }, "edited") : null);

  let quote = null;
  if (m.comment_to) {
    const parent = ctx.byId.get(m.comment_to);
    quote = h("p", { class: "quote" }, "↳ reply to ",
      parent ? `${parent.author}: “${snippet(parent.text)}”` : "an earlier message");
  }

  const files = m.attachments.length ? h("ul", { class: "files" }, m.attachments.map((f) =>
    h("li", {},
      h("button", { type: "button", class: "file", onclick: () => ctx.onDownload(f) },
        h("span", { "aria-hidden": "true" }, "⬇ "), "Download ", f.name),
      h("span", { class: "size" }, ` ${formatSize(f.size)}`)))) : null;

  const actions = h("div", { class: "actions" },
    h("button", { type: "button", onclick: () => ctx.onReply(m) }, "Reply"),
    mine && m.text !== null && ctx.can("messages.edit")
      ? h("button", { type: "button", onclick: () => ctx.onEdit(m) }, "Edit") : null,
    (mine || ctx.isOwner) && ctx.can("messages.delete")
      ? h("button", { type: "button", onclick: () => ctx.onDelete(m) }, "Delete") : null,
    mine ? null : h("button", { type: "button", onclick: () => ctx.onReport(m.author) }, "Report"));

  return h("article", { class: `msg${mine ? " mine" : ""}${m.comment_to ? " comment" : ""}` },
    meta, quote,
    m.text !== null ? h("p", { class: "text" }, m.text) : null,
    files, actions);
}

/** Show "Seen" under my last message at or before `messageId` (a direct chat's receipt). */
export function markSeen(messages, elements, me, messageId) {
  for (const old of document.querySelectorAll(".seen")) old.remove();
  const upTo = messages.findIndex((m) => m.message_id === messageId);
  for (let i = upTo; i >= 0; i--) {
    if (messages[i].author === me) {
      elements.get(messages[i].message_id)?.querySelector(".meta")
        ?.append(h("span", { class: "seen" }, "✓ Seen"));
      return;
    }
  }
}

export { snippet };

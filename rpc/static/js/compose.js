// Writing: send, reply, edit, delete, schedule, attach and download files.
import { $, formatSize, formatTime, h, replaceChildren } from "./dom.js";
import { describeError } from "./errors.js";
import { snippet } from "./messages.js";
import { newId, notify, report, state } from "./state.js";
import { appendMessage, openChat, refreshChats, removeMessage, replaceMessage } from "./chat.js";
import { addScheduled } from "./panels.js";

// ---------------------------------------------------------------- composing and sending

export function resetComposerMode() {
  state.replyTo = null;
  state.editing = null;
  $("reply-bar").hidden = true;
}

export function startReply(m) {
  state.editing = null;
  state.replyTo = m;
  $("reply-text").textContent = `Replying to ${m.author}: “${snippet(m.text)}”`;
  $("reply-cancel").textContent = "Cancel reply";
  $("reply-bar").hidden = false;
  $("compose").focus();
}

export function startEdit(m) {
  state.replyTo = null;
  state.editing = m;
  $("reply-text").textContent = "Editing your text; Send saves it.";
  $("reply-cancel").textContent = "Cancel edit";
  $("reply-bar").hidden = false;
  $("compose").value = m.text || "";
  $("compose").focus();
}

export function cancelMode() {
  if (state.editing) $("compose").value = "";
  resetComposerMode();
}

function target() {
  if (state.draftTo) return { to: state.draftTo };
  if (state.open !== null) return { chat_id: state.open };
  return null;
}

export async function send(sendAt = null) {
  if (state.sending) return;
  state.sending = true;
  try {
    await state.uploading;
    const text = $("compose").value.trim();
    if (state.editing) {
      if (text) await saveEdit(text);
      return;
    }
    if (!text && state.files.length === 0) return;
    const params = target();
    if (params === null) return;
    if (text) params.text = text;
    if (state.files.length) params.attachments = state.files.map((f) => f.file_id);
    if (state.replyTo) params.comment_to = state.replyTo.message_id;
    if (sendAt) params.send_at = sendAt;
    params.client_msg_id = state.draftId;
    const result = await state.api.call("messages.send", params);
    $("compose").value = "";
    $("compose").rows = 1;
    state.files = [];
    state.draftId = newId();
    renderPendingFiles();
    resetComposerMode();
    if (result.scheduled) {
      addScheduled(result.scheduled);
      notify(`Scheduled for ${formatTime(result.scheduled.send_at)}.`, "info");
    } else if (state.draftTo) {
      await refreshChats();
      await openChat(result.message.chat_id);
    } else {
      state.counted.add(result.message.message_id);
      if (result.message.chat_id === state.open) appendMessage(result.message);
    }
  } finally {
    state.sending = false;
  }
}

async function saveEdit(text) {
  const { message } = await state.api.call("messages.edit",
    { message_id: state.editing.message_id, text });
  $("compose").value = "";
  resetComposerMode();
  replaceMessage(message);
}

export async function deleteMessage(m) {
  await state.api.call("messages.delete", { message_id: m.message_id });
  removeMessage(m.message_id);
}

export async function schedule() {
  const value = $("deliver-at").value;
  if (!value) {
    notify("Pick a date and time to deliver at.", "info");
    $("deliver-at").focus();
    return;
  }
  if (!$("compose").value.trim() && state.files.length === 0) {
    notify("Write the text to schedule first.", "info");
    return;
  }
  await send(new Date(value).toISOString());
  $("deliver-at").value = "";
}

// ---------------------------------------------------------------- files

export function pickFiles() {
  const input = $("file-input");
  const files = [...input.files];
  input.value = "";
  state.uploading = state.uploading.then(() => uploadAll(files)).catch(report);
}

async function uploadAll(files) {
  const bar = $("upload-progress");
  for (const file of files) {
    bar.value = 0;
    bar.hidden = false;
    try {
      const stored = await state.api.upload(file, (done) => {
        bar.value = Math.round(done * 100);
      });
      state.files.push(stored);
      renderPendingFiles();
    } catch (err) {
      notify(`Could not upload ${file.name}: ${describeError(err)}`);
    } finally {
      bar.hidden = true;
    }
  }
}

function renderPendingFiles() {
  replaceChildren($("pending-files"), state.files.map((f) => h("li", { class: "chip" },
    `${f.name} (${formatSize(f.size)})`,
    h("button", {
      type: "button",
      class: "quiet",
      "aria-label": `Remove ${f.name}`,
      onclick: () => {
        state.files = state.files.filter((x) => x !== f);
        renderPendingFiles();
      },
    }, "×"))));
}

export async function download(file) {
  const blob = await state.api.download(file.file_id);
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: file.name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// Errors in words a person wants to read: what happened, and when it will be fine again.
import { NetworkError, RpcError } from "./api.js";
import { formatTime } from "./dom.js";

const inSeconds = (seconds) => new Date(Date.now() + seconds * 1000).toISOString();

function sentence(text) {
  const s = String(text || "something went wrong").trim();
  return s.charAt(0).toUpperCase() + s.slice(1) + (/[.!?]$/.test(s) ? "" : ".");
}

/** A one-line explanation of a failed call. */
export function describeError(err) {
  if (err instanceof NetworkError) return "Connection lost — reconnecting… Nothing was sent.";
  if (!(err instanceof RpcError)) return "Something went wrong in this page. Please reload it.";
  const data = err.data || {};
  switch (err.code) {
    case 401:
      return "Your session has ended. Please sign in again.";
    case 403:
      if (data.reason === "banned") {
        return `You are banned from sending until ${formatTime(data.until)}.`;
      }
      if (data.reason === "blocked") return "This person does not accept your messages.";
      return sentence(err.message);
    case 404:
      return sentence(err.message);
    case 409:
      return sentence(err.message);
    case 413:
      return `Too large: ${err.message}.`;
    case 429:
      if (data.retry_after) {
        const at = formatTime(inSeconds(data.retry_after));
        return `${sentence(err.message)} You can try again at ${at}.`;
      }
      return sentence(err.message);
    case 503:
      return "The server is busy for a moment; please try again shortly.";
    case 507:
      return "The server is out of disk space; nothing was saved.";
    case -32602:
      return sentence(err.message);
    default:
      return sentence(err.message);
  }
}

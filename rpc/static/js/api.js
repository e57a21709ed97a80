// The public API, as any client uses it: POST /rpc, GET /poll, POST and GET /files.

/** An error answer: JSON-RPC `error`, or the JSON error body of /poll and /files. */
export class RpcError extends Error {
  constructor(code, message, data = null, status = 200) {
    super(message);
    this.code = code;
    this.data = data || {};
    this.status = status;
  }
}

/** The server could not be reached (or answered something that is not ours). */
export class NetworkError extends Error {}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) {
      return new RpcError(body.error.code, body.error.message, body.error.data, response.status);
    }
  } catch { /* not JSON: fall through */ }
  return new NetworkError(`HTTP ${response.status}`);
}

/** A signed-in (or not yet) connection to this page's server. */
export class Api {
  constructor(token = null) {
    this.token = token;
    this.nextId = 1;
  }

  headers() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  /** Call one JSON-RPC method; its result, or throws RpcError / NetworkError. */
  async call(method, params = {}) {
    let response;
    try {
      response = await fetch("/rpc", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...this.headers() },
        body: JSON.stringify({ jsonrpc: "2.0", id: this.nextId++, method, params }),
      });
    } catch {
      throw new NetworkError("connection lost");
    }
    let body;
    try {
      body = await response.json();
    } catch {
      throw new NetworkError(`HTTP ${response.status}`);
    }
    if (body.error) {
      throw new RpcError(body.error.code, body.error.message, body.error.data, response.status);
    }
    return body.result;
  }

  /** One long poll: `{events, cursor, more}`; a null cursor asks for everything unacknowledged. */
  async poll(cursor, timeout, signal) {
    const query = new URLSearchParams({ timeout: String(timeout) });
    if (cursor !== null) query.set("cursor", String(cursor));
    let response;
    try {
      response = await fetch(`/poll?${query}`, { headers: this.headers(), signal });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new NetworkError("connection lost");
    }
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  /** Upload a File; resolves to `{file_id, name, size, content_type}`. */
  upload(file, onProgress) {
    return new Promise((resolve, reject) => {
      // XMLHttpRequest, not fetch: only it reports upload progress.
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/files?name=${encodeURIComponent(file.name)}`);
      for (const [key, value] of Object.entries(this.headers())) xhr.setRequestHeader(key, value);
      xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) onProgress(e.loaded / e.total);
      });
      xhr.addEventListener("load", () => {
        const body = xhr.response;
        if (xhr.status === 200 && body) resolve(body);
        else if (body && body.error) {
          reject(new RpcError(body.error.code, body.error.message, body.error.data, xhr.status));
        } else reject(new NetworkError(`HTTP ${xhr.status}`));
      });
      xhr.addEventListener("error", () => reject(new NetworkError("connection lost")));
      xhr.send(file);
    });
  }

  /** The bytes of an attachment, as a Blob (the token goes in a header, never a URL). */
  async download(fileId) {
    let response;
    try {
      response = await fetch(`/files/${encodeURIComponent(fileId)}`, { headers: this.headers() });
    } catch {
      throw new NetworkError("connection lost");
    }
    if (!response.ok) throw await errorOf(response);
    return response.blob();
  }
}

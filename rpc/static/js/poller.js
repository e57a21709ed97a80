// The live event stream: one long poll after another, reconnecting with capped exponential
// backoff, always from the last cursor so nothing missed while away is lost.
import { RpcError } from "./api.js";
import { sleep } from "./dom.js";

const POLL_TIMEOUT = 25;      // seconds the server may hold a poll (its default cap is 30)
const FIRST_RETRY = 500;      // ms before the first retry after a failure
const MAX_RETRY = 8000;       // ms: the backoff stops doubling here

export class Poller {
  /**
   * hooks: onEvents(events) (awaited; a throw is logged, the stream goes on),
   * onState("online" | "reconnecting", retryMs), onCursor(cursor), onAuthLost().
   */
  constructor(api, cursor, hooks) {
    this.api = api;
    this.cursor = cursor;
    this.hooks = hooks;
    this.controller = new AbortController();
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.controller.abort();
  }

  async run() {
    const signal = this.controller.signal;
    let retry = FIRST_RETRY;
    let answered = false; // after a start or a failure, the first poll returns at once:
    while (!signal.aborted) { // it tells the page it is connected without a long wait
      let body;
      try {
        body = await this.api.poll(this.cursor, answered ? POLL_TIMEOUT : 0, signal);
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof RpcError && err.status === 401) {
          this.hooks.onAuthLost();
          return;
        }
        if (err instanceof RpcError && err.status === 400 && this.cursor !== null) {
          // A cursor this server never issued (its data was replaced): start again from
          // the read marker it keeps for us.
          this.cursor = null;
          continue;
        }
        answered = false;
        this.hooks.onState("reconnecting", retry);
        // Jitter, so many clients of a restarted server do not all come back at once.
        await sleep(retry * (0.75 + Math.random() / 2), signal);
        retry = Math.min(retry * 2, MAX_RETRY);
        continue;
      }
      retry = FIRST_RETRY;
      answered = true;
      this.hooks.onState("online", 0);
      if (body.events.length) {
        try {
          await this.hooks.onEvents(body.events);
        } catch (err) {
          console.error("event handler failed", err); // a bug in this page, not the network
        }
      }
      this.cursor = body.cursor;
      this.hooks.onCursor(body.cursor);
    }
  }
}

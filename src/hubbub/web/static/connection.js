// One WebSocket to /ws per session, speaking protocol v1; reconnects and resumes.

import { RATE, wsUrl } from "./util.js";

const MAX_QUEUED_S = 60; // audio held while reconnecting before the oldest is dropped
const MAX_RETRIES = 8;

export const ERRORS = {
  server_full: "The server is busy: every live slot is taken.",
  transcriber_unavailable: "The transcription service cannot be reached.",
  transcriber_lost: "The connection to the transcription service dropped.",
  transcriber_timeout: "The transcription service did not answer in time.",
  shutting_down: "The server is restarting.",
  idle_timeout: "The session closed because no audio arrived for a while.",
  session_too_long: "The session reached its maximum length.",
  buffer_full: "The server could not keep up with the audio, so it closed the session.",
  unauthorized: "This server needs an access key: open the page as …/?token=YOUR_KEY.",
  forbidden_origin: "The server does not accept streams from this page's address (see allowed origins).",
  too_many_connections: "Too many streams from this computer at once: close other hubbub tabs and try again.",
  engine_error: "The transcription engine failed on this session.",
  unsupported_audio: "The server does not accept this audio format.",
  frame_too_large: "An audio frame was too large for the server.",
  unknown_session: "The previous session could not be resumed.",
};
const RETRYABLE = new Set(["server_full", "transcriber_unavailable", "transcriber_lost", "transcriber_timeout", "shutting_down"]);
const FINAL_CLOSE_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);

// One WebSocket to /ws per session; reconnects and resumes (session_id + last_seq) when the
// connection drops, holding captured audio meanwhile so none is lost silently.
export class Connection {
  constructor(handlers) {
    this.h = handlers;
    this.ws = null;
    this.state = "idle";
    this.sessionId = null;
    this.lastSeq = null;
    this.limits = null;
    this.engine = "";
    this.queue = [];
    this.queuedBytes = 0;
    this.droppedS = 0;
    this.sentS = 0;
    this.wanted = false;
    this.retries = 0;
    this.retryTimer = null;
  }

  get live() {
    return this.state === "live" && this.ws && this.ws.readyState === WebSocket.OPEN;
  }
  get active() {
    return ["connecting", "live", "reconnecting", "stopping"].includes(this.state);
  }

  setState(state) {
    this.state = state;
    this.h.onState(state);
  }

  // Open a new session; resolves on its `ready`, rejects when it definitively fails.
  open({ reconnect = true } = {}) {
    this.sessionId = null;
    this.lastSeq = null;
    this.sentS = 0;
    this.droppedS = 0;
    this.wanted = true;
    this.reconnect = reconnect;
    this.retries = 0;
    this.everReady = false;
    this.setState("connecting");
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.dial();
    });
  }

  dial() {
    const ws = new WebSocket(wsUrl());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let error = null;
    let ready = false;
    ws.onopen = () => {
      const start = { type: "start", sample_rate: RATE, encoding: "pcm_s16le", channels: 1 };
      if (this.sessionId) {
        start.session_id = this.sessionId;
        if (this.lastSeq !== null) start.last_seq = this.lastSeq;
      }
      ws.send(JSON.stringify(start));
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg.type === "ready") {
        ready = true;
        const resumed = Boolean(this.sessionId) && msg.session_id === this.sessionId;
        this.sessionId = msg.session_id;
        this.limits = msg.limits;
        this.engine = msg.engine;
        this.retries = 0;
        this.setState("live");
        this.h.onReady(msg, resumed);
        this.flushQueue();
        if (this.pending) this.pending.resolve(msg), (this.pending = null);
      } else if (msg.type === "transcript") {
        // A resumed stream starts with a catch-up update that may repeat finals: the view
        // keeps finals by id, so applying it again is harmless.
        this.lastSeq = Math.max(this.lastSeq ?? 0, msg.seq);
        this.h.onUpdate(msg);
      } else if (msg.type === "ended") {
        this.ended = msg;
        this.h.onEnded(msg);
      } else if (msg.type === "error") {
        error = msg;
      }
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.ws = null;
      this.closed(ev, error, ready);
    };
  }

  closed(ev, error, wasReady) {
    const code = error && error.code;
    if (this.state === "stopping" || !this.wanted || this.ended) {
      this.wanted = false;
      this.setState(this.ended || this.state === "stopping" ? "ended" : "idle");
      this.h.onClosed(this.ended);
      if (this.stopDone) this.stopDone(), (this.stopDone = null);
      return;
    }
    if (code === "unknown_session" && this.sessionId) {
      // Resume refused (expired, or not supported): carry on in a fresh session.
      this.h.onNewSession(this.sessionId);
      this.sessionId = null;
      this.lastSeq = null;
      this.dial();
      return;
    }
    const retryable = code ? RETRYABLE.has(code) : !FINAL_CLOSE_CODES.has(ev.code);
    const why = describe(error, ev);
    if (!retryable || !this.reconnect || this.retries >= MAX_RETRIES) {
      this.wanted = false;
      this.setState("failed");
      this.h.onFailed(why, code || `close_${ev.code}`);
      if (this.pending) this.pending.reject(new Error(why)), (this.pending = null);
      return;
    }
    const delay = code === "server_full" ? Math.min(30, 5 * 2 ** this.retries) : Math.min(10, 0.5 * 2 ** this.retries);
    this.retries += 1;
    this.everReady = this.everReady || wasReady;
    this.setState(this.everReady ? "reconnecting" : "connecting");
    const what = wasReady || code ? why : "Cannot reach the server.";
    this.h.onRetry(`${what} Retrying in ${delay < 1 ? delay.toFixed(1) : Math.round(delay)} s…`);
    this.retryTimer = setTimeout(() => this.wanted && this.dial(), delay * 1000);
  }

  sendAudio(buf) {
    const seconds = buf.byteLength / 2 / RATE;
    if (this.live && this.queue.length === 0) {
      this.ws.send(buf);
      this.sentS += seconds;
      return;
    }
    if (!this.wanted) return;
    this.queue.push(buf);
    this.queuedBytes += buf.byteLength;
    while (this.queuedBytes > MAX_QUEUED_S * RATE * 2) {
      const old = this.queue.shift();
      this.queuedBytes -= old.byteLength;
      this.droppedS += old.byteLength / 2 / RATE;
    }
    if (this.live) this.flushQueue();
  }

  flushQueue() {
    while (this.live && this.queue.length) {
      const buf = this.queue.shift();
      this.queuedBytes -= buf.byteLength;
      this.ws.send(buf);
      this.sentS += buf.byteLength / 2 / RATE;
    }
  }

  send(obj) {
    if (this.live) this.ws.send(JSON.stringify(obj));
  }

  // Ask the server to finish: it flushes, sends `ended` and closes.
  stop(timeoutMs = 120000) {
    clearTimeout(this.retryTimer);
    if (!this.live) {
      this.wanted = false;
      if (this.ws) this.ws.close(1000);
      this.setState(this.sessionId ? "ended" : "idle");
      return Promise.resolve();
    }
    this.flushQueue();
    this.setState("stopping");
    this.ws.send(JSON.stringify({ type: "stop" }));
    return new Promise((resolve) => {
      this.stopDone = resolve;
      setTimeout(() => {
        if (this.ws) this.ws.close(1000);
        resolve();
      }, timeoutMs);
    });
  }

  reset() {
    this.ended = null;
  }
}

export function describe(error, ev) {
  if (error) return ERRORS[error.code] || error.message || error.code;
  if (ev && ev.code === 1013) return ERRORS.server_full;
  if (ev && ev.code === 1006) return "The connection was lost.";
  if (ev && ev.code === 1001) return "The server went away.";
  return `The connection closed (code ${ev ? ev.code : "?"}).`;
}


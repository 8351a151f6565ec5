// One WebSocket to /ws per session, speaking protocol v1; reconnects and resumes.
//
// The page keeps the audio the server has not settled yet (everything after the last
// update's `audio_committed_s`, at most MAX_KEPT_S), so that when the connection, the web
// app or the transcriber goes away, it reconnects with the session's id, resume token and
// last seq and sends again what the server no longer holds (`resume_from_s` in its
// `ready`). Nothing the microphone captured is lost while that works, and if it cannot,
// the page says so. Which errors are worth retrying comes from the server (/protocol.json).

import { RATE, wsUrl } from "./util.js";

const MAX_KEPT_S = 180; // audio kept for a resume; past that the oldest goes, and we say so
const MAX_RETRIES = 12;
const PING_EVERY_MS = 2500;
const SILENT_LIMIT_MS = 10000; // nothing at all from the server for this long: the path is dead
const BYTES_PER_S = RATE * 2;

export const ERRORS = {
  server_full: "The server is busy: every live slot is taken.",
  session_busy: "The session is moving to another server.",
  transcriber_unavailable: "The transcription service cannot be reached.",
  transcriber_lost: "The connection to the transcription service dropped.",
  transcriber_timeout: "The transcription service did not answer in time.",
  shutting_down: "The server is restarting.",
  internal_error: "The server hit an internal error on this session.",
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
  taken_over: "This session continued in another window, so this one stopped.",
};

// What the server says about its error codes; until it answers, the usual ones.
let RETRYABLE = new Set(["server_full", "session_busy", "too_many_connections", "shutting_down", "internal_error", "transcriber_unavailable", "transcriber_lost", "transcriber_timeout"]);
export const protocolReady = fetch(new URL("protocol.json", new URL(".", location.href)))
  .then((r) => (r.ok ? r.json() : null))
  .then((p) => {
    if (p && p.errors) RETRYABLE = new Set(Object.entries(p.errors).filter(([, e]) => e.retryable).map(([code]) => code));
  })
  .catch(() => {});
const FINAL_CLOSE_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);

// Audio sent in this session, kept until the server has settled it. Positions are bytes on
// the session's clock (16 kHz int16), so "send again from 12.3 s" is exact.
class ReplayLog {
  constructor() {
    this.reset(0);
  }
  reset(startS) {
    this.items = []; // {pos, buf} or {pos, text}
    this.pos = toBytes(startS);
    this.bytes = 0;
    this.droppedTo = 0;
  }
  get heldS() {
    return this.bytes / BYTES_PER_S;
  }
  audio(buf) {
    this.items.push({ pos: this.pos, buf });
    this.pos += buf.byteLength;
    this.bytes += buf.byteLength;
    let dropped = 0;
    while (this.bytes > MAX_KEPT_S * BYTES_PER_S && this.items.length) {
      const old = this.items.shift();
      if (old.buf) {
        this.bytes -= old.buf.byteLength;
        this.droppedTo = old.pos + old.buf.byteLength;
        dropped += old.buf.byteLength / BYTES_PER_S;
      }
    }
    return dropped;
  }
  control(text) {
    this.items.push({ pos: this.pos, text });
  }
  settle(committedS) {
    const cut = toBytes(committedS);
    while (this.items.length) {
      const it = this.items[0];
      const end = it.buf ? it.pos + it.buf.byteLength : it.pos + 1;
      if (end > cut) break;
      this.items.shift();
      if (it.buf) this.bytes -= it.buf.byteLength;
    }
  }
  // What to send again to a server that holds audio up to resumeFromS; null if no longer held.
  since(resumeFromS) {
    const cut = toBytes(resumeFromS);
    if (cut < this.droppedTo) return null;
    const out = [];
    for (const it of this.items) {
      if (it.text !== undefined) {
        if (it.pos >= cut) out.push(it.text);
      } else if (it.pos + it.buf.byteLength > cut) {
        out.push(it.pos >= cut ? it.buf : it.buf.slice(cut - it.pos));
      }
    }
    return out;
  }
}

function toBytes(seconds) {
  return Math.round((seconds || 0) * RATE) * 2;
}

export class Connection {
  constructor(handlers) {
    this.h = handlers;
    this.ws = null;
    this.state = "idle";
    this.sessionId = null;
    this.resumeToken = null;
    this.lastSeq = null;
    this.limits = null;
    this.engine = "";
    this.log = new ReplayLog();
    this.droppedS = 0;
    this.wanted = false;
    this.retries = 0;
    this.retryTimer = null;
    this.pinger = null;
  }

  get live() {
    return this.state === "live" && this.ws && this.ws.readyState === WebSocket.OPEN;
  }
  get active() {
    return ["connecting", "live", "reconnecting", "stopping"].includes(this.state);
  }
  get heldS() {
    return this.log.heldS;
  }

  setState(state) {
    this.state = state;
    this.h.onState(state);
  }

  // Open a new session; resolves on its `ready`, rejects when it definitively fails.
  open({ reconnect = true } = {}) {
    this.sessionId = null;
    this.resumeToken = null;
    this.lastSeq = null;
    this.droppedS = 0;
    this.stopping = false;
    this.log.reset(0);
    this.wanted = true;
    this.reconnect = reconnect;
    this.retries = 0;
    this.everReady = false;
    this.setState("connecting");
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      protocolReady.then(() => this.dial());
    });
  }

  dial() {
    const ws = new WebSocket(wsUrl());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let error = null;
    let ready = false;
    let heard = performance.now();
    ws.onopen = () => {
      const start = { type: "start", sample_rate: RATE, encoding: "pcm_s16le", channels: 1 };
      if (this.sessionId && this.resumeToken) {
        start.session_id = this.sessionId;
        start.resume_token = this.resumeToken;
        if (this.lastSeq !== null) start.last_seq = this.lastSeq;
      }
      ws.send(JSON.stringify(start));
      // Our own pings through the relay to the transcriber: a path that died without a
      // close (a frozen proxy, a killed server) is noticed within SILENT_LIMIT_MS.
      clearInterval(this.pinger);
      this.pinger = setInterval(() => {
        if (this.ws !== ws) return clearInterval(this.pinger);
        if (performance.now() - heard > SILENT_LIMIT_MS) return ws.close(4000, "no answer");
        if (ready && ws.readyState === WebSocket.OPEN) ws.send('{"type":"ping"}');
      }, PING_EVERY_MS);
    };
    ws.onmessage = (ev) => {
      heard = performance.now();
      if (typeof ev.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg.type === "ready") this.onReady(msg, ws, () => (ready = true));
      else if (msg.type === "transcript") {
        this.lastSeq = Math.max(this.lastSeq ?? 0, msg.seq);
        this.log.settle(msg.audio_committed_s);
        this.h.onUpdate(msg);
      } else if (msg.type === "speakers") {
        this.h.onSpeakers(msg);
      } else if (msg.type === "ended") {
        if (msg.reason === "shutting_down" && !this.stopping) return; // it will be resumed
        this.ended = msg;
        this.h.onEnded(msg);
      } else if (msg.type === "error") {
        error = msg;
      }
    };
    ws.onclose = (ev) => {
      clearInterval(this.pinger);
      if (this.ws === ws) this.ws = null;
      this.closed(ev, error, ready);
    };
  }

  onReady(msg, ws, markReady) {
    const resumed = Boolean(this.sessionId) && msg.session_id === this.sessionId && msg.resumed;
    let replay = [];
    if (resumed) {
      replay = this.log.since(msg.resume_from_s); // what the server no longer holds, first
    } else {
      this.log.reset(msg.resume_from_s || 0);
      replay = this.carry || [];
      for (const buf of replay) this.log.audio(buf);
      this.carry = null;
    }
    if (replay === null) {
      this.h.onLost(`Audio from ${msg.resume_from_s.toFixed(1)} s on was no longer held and could not be sent again.`);
    } else {
      for (const item of replay) ws.send(item);
    }
    markReady();
    this.sessionId = msg.session_id;
    if (msg.resume_token) this.resumeToken = msg.resume_token;
    this.limits = msg.limits;
    this.engine = msg.engine;
    this.retries = 0;
    this.setState(this.stopping ? "stopping" : "live");
    this.h.onReady(msg, resumed);
    if (this.pending) this.pending.resolve(msg), (this.pending = null);
  }

  closed(ev, error, wasReady) {
    const code = error && error.code;
    if (this.ended || !this.wanted) {
      this.wanted = false;
      this.setState(this.ended ? "ended" : "idle");
      this.h.onClosed(this.ended);
      if (this.stopDone) this.stopDone(), (this.stopDone = null);
      return;
    }
    if (code === "unknown_session" && this.sessionId) {
      // Resume refused (expired, or not ours): carry on in a fresh session, starting with
      // the audio the old one had not settled.
      this.carry = (this.log.since(0) || []).filter((item) => typeof item !== "string");
      this.h.onNewSession(this.sessionId);
      this.sessionId = null;
      this.resumeToken = null;
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
      if (this.stopDone) this.stopDone(), (this.stopDone = null);
      return;
    }
    const delay = code === "server_full" ? Math.min(30, 5 * 2 ** this.retries) : Math.min(10, 0.5 * 2 ** this.retries);
    this.retries += 1;
    this.everReady = this.everReady || wasReady;
    this.setState(this.everReady ? "reconnecting" : "connecting");
    const what = wasReady || code ? why : "Cannot reach the server.";
    const held = this.log.heldS >= 1 ? ` Holding ${Math.round(this.log.heldS)} s of audio.` : "";
    this.h.onRetry(`${what} Retrying in ${delay < 1 ? delay.toFixed(1) : Math.round(delay)} s…${held}`);
    this.retryTimer = setTimeout(() => this.wanted && this.dial(), delay * 1000);
  }

  sendAudio(buf) {
    if (!this.wanted) return;
    const dropped = this.log.audio(buf);
    if (dropped) {
      this.droppedS += dropped;
      this.h.onLost(`${Math.round(this.droppedS)} s of audio could not be kept while the server was away.`);
    }
    if (this.live) this.ws.send(buf);
  }

  send(obj) {
    if (this.live) this.ws.send(JSON.stringify(obj));
  }

  // Ask the server to finish: it flushes, sends `ended` and closes.
  stop(timeoutMs = 120000) {
    clearTimeout(this.retryTimer);
    if (!this.sessionId) {
      this.wanted = false;
      if (this.ws) this.ws.close(1000);
      this.setState("idle");
      return Promise.resolve();
    }
    const text = JSON.stringify({ type: "stop" });
    if (this.live) this.ws.send(text);
    this.stopping = true;
    this.log.control(text); // sent again if the connection drops before `ended`
    this.setState("stopping");
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
  if (ev && ev.code === 4000) return "The server stopped answering.";
  return `The connection closed (code ${ev ? ev.code : "?"}).`;
}

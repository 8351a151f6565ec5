// hubbub web UI: microphone or file -> 16 kHz int16 -> WS /ws (protocol v1) -> live transcript.
// No build step, no dependencies. The page speaks the same protocol as any other client.

const RATE = 16000;
const FRAME_MS = 100;
const MAX_QUEUED_S = 60; // audio held while reconnecting before the oldest is dropped
const MAX_RETRIES = 8;
const TURN_GAP_S = 3; // same speaker within this gap continues the same paragraph
const PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d"];

const ERRORS = {
  server_full: "The server is busy: every live slot is taken.",
  transcriber_unavailable: "The transcription service cannot be reached.",
  transcriber_lost: "The connection to the transcription service dropped.",
  transcriber_timeout: "The transcription service did not answer in time.",
  shutting_down: "The server is restarting.",
  idle_timeout: "The session closed because no audio arrived for a while.",
  session_too_long: "The session reached its maximum length.",
  buffer_full: "The server could not keep up with the audio, so it closed the session.",
  unauthorized: "This server refused the connection (not authorised).",
  engine_error: "The transcription engine failed on this session.",
  unsupported_audio: "The server does not accept this audio format.",
  frame_too_large: "An audio frame was too large for the server.",
  unknown_session: "The previous session could not be resumed.",
};
const RETRYABLE = new Set(["server_full", "transcriber_unavailable", "transcriber_lost", "transcriber_timeout", "shutting_down"]);
const FINAL_CLOSE_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);

const $ = (sel) => document.querySelector(sel);
const base = new URL(".", location.href);
const wsUrl = () => `${base.protocol === "https:" ? "wss" : "ws"}://${base.host}${base.pathname}ws`;
const api = (path) => new URL(`api/${path}`, base).toString();

function clock(s, withMs = false) {
  s = Math.max(0, s || 0);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = withMs ? (s % 60).toFixed(1).padStart(4, "0") : String(Math.floor(s % 60)).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && k !== "list") node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// --- notices -----------------------------------------------------------------------------

const notice = {
  show(kind, text, sticky = kind !== "info") {
    const box = $("#notice");
    box.dataset.kind = kind;
    box.querySelector(".text").textContent = text;
    box.hidden = false;
    clearTimeout(this.timer);
    if (!sticky) this.timer = setTimeout(() => (box.hidden = true), 6000);
  },
  clear() {
    $("#notice").hidden = true;
  },
};

// --- the stream to the server ------------------------------------------------------------

// One WebSocket to /ws per session; reconnects and resumes (session_id + last_seq) when the
// connection drops, holding captured audio meanwhile so none is lost silently.
class Connection {
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
        if (this.lastSeq !== null && msg.seq <= this.lastSeq) return; // already seen
        this.lastSeq = msg.seq;
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
    this.setState("reconnecting");
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

function describe(error, ev) {
  if (error) return ERRORS[error.code] || error.message || error.code;
  if (ev && ev.code === 1013) return ERRORS.server_full;
  if (ev && ev.code === 1006) return "The connection was lost.";
  if (ev && ev.code === 1001) return "The server went away.";
  return `The connection closed (code ${ev ? ev.code : "?"}).`;
}

// --- microphone capture ------------------------------------------------------------------

class Capture {
  constructor(onFrame, onLevel) {
    this.onFrame = onFrame;
    this.onLevel = onLevel;
    this.ctx = null;
  }

  get running() {
    return this.ctx !== null;
  }

  async start(deviceId) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw Object.assign(new Error("insecure"), { name: "InsecureContext" });
    }
    const audio = { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (deviceId) audio.deviceId = { exact: deviceId };
    this.stream = await navigator.mediaDevices.getUserMedia({ audio });
    try {
      this.ctx = new AudioContext({ latencyHint: "interactive" });
      await this.ctx.audioWorklet.addModule(new URL("audio-worklet.js", base));
      const source = this.ctx.createMediaStreamSource(this.stream);
      this.node = new AudioWorkletNode(this.ctx, "pcm-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        processorOptions: { targetRate: RATE, frameMs: FRAME_MS },
      });
      this.node.port.onmessage = (ev) => {
        this.onFrame(ev.data.pcm);
        this.onLevel(ev.data.level);
      };
      // Pulled through a muted gain so every browser keeps the worklet running.
      const mute = this.ctx.createGain();
      mute.gain.value = 0;
      source.connect(this.node).connect(mute).connect(this.ctx.destination);
      await this.ctx.resume();
      this.inputRate = this.ctx.sampleRate;
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  stop() {
    if (this.node) this.node.port.postMessage("stop"), this.node.disconnect();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.ctx) this.ctx.close();
    this.node = this.stream = this.ctx = null;
    this.onLevel(0);
  }
}

function micError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow it for this site (the icon at the left of the address bar), then press Start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Plug one in or pick another in the list, then press Start.";
    case "NotReadableError":
      return "The microphone is busy or unavailable (another app may be using it).";
    case "InsecureContext":
      return "This browser only allows the microphone on https:// pages or on localhost.";
    default:
      return `Could not start the microphone: ${err && err.message ? err.message : err}`;
  }
}

async function listMicrophones() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const select = $("#mic");
  const current = select.value;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  select.replaceChildren(el("option", { value: "" }, "Default microphone"));
  devices
    .filter((d) => d.deviceId && d.deviceId !== "default")
    .forEach((d, i) => select.append(el("option", { value: d.deviceId }, d.label || `Microphone ${i + 1}`)));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

// --- speakers ------------------------------------------------------------------------------

class Speakers {
  constructor() {
    this.reset(null);
  }

  reset(sessionId) {
    this.sessionId = sessionId;
    this.map = new Map(); // label -> {color, name, talk, words}
    this.names = {};
    if (sessionId) {
      try {
        this.names = JSON.parse(localStorage.getItem(`hubbub:names:${sessionId}`) || "{}");
      } catch {
        this.names = {};
      }
    }
  }

  get(label) {
    let s = this.map.get(label);
    if (!s) {
      const m = /^S(\d+)$/.exec(label);
      s = {
        color: PALETTE[this.map.size % PALETTE.length],
        fallback: m ? `Speaker ${m[1]}` : label,
        talk: 0,
        words: 0,
      };
      this.map.set(label, s);
    }
    return s;
  }

  name(label) {
    return this.names[label] || this.get(label).fallback;
  }

  rename(label, name) {
    name = name.trim();
    if (name && name !== this.get(label).fallback) this.names[label] = name;
    else delete this.names[label];
    if (this.sessionId) localStorage.setItem(`hubbub:names:${this.sessionId}`, JSON.stringify(this.names));
  }

  count(seg) {
    const s = this.get(seg.speaker);
    s.talk += Math.max(0, seg.end - seg.start);
    s.words += seg.text.split(/\s+/).filter(Boolean).length;
  }
}

// --- the transcript ---------------------------------------------------------------------------

class TranscriptView {
  constructor(root, speakers, onSpeakersChanged) {
    this.root = root;
    this.speakers = speakers;
    this.onSpeakersChanged = onSpeakersChanged;
    this.clear();
  }

  clear() {
    this.finals = [];
    this.ids = new Set();
    this.partials = [];
    this.turns = [];
    this.partialNodes = [];
    this.root.querySelectorAll(".turn, .divider").forEach((n) => n.remove());
    $("#empty").hidden = false;
  }

  divider(text) {
    this.root.append(el("div", { class: "divider" }, text));
    this.turns.push(null); // a new session always starts a new turn
  }

  addFinals(segments) {
    const stick = this.nearBottom();
    let reflow = false;
    for (const seg of segments) {
      if (this.ids.has(seg.id)) continue;
      this.ids.add(seg.id);
      this.speakers.count(seg);
      const last = this.finals[this.finals.length - 1];
      if (last && seg.start < last.start - 0.05) reflow = true;
      this.finals.push(seg);
      if (!reflow) this.placeFinal(seg);
    }
    if (reflow) this.rebuild();
    this.drawPartials();
    if (segments.length) this.onSpeakersChanged();
    if (stick) this.scrollDown();
  }

  setPartials(partials) {
    const stick = this.nearBottom();
    this.partials = partials.filter((p) => p.text && p.text.trim());
    this.drawPartials();
    if (stick) this.scrollDown();
  }

  rebuild() {
    this.finals.sort((a, b) => a.start - b.start || a.end - b.end);
    this.root.querySelectorAll(".turn").forEach((n) => n.remove());
    this.turns = [];
    for (const seg of this.finals) this.placeFinal(seg);
  }

  placeFinal(seg) {
    if (!seg.text || !seg.text.trim()) return;
    const last = this.turns[this.turns.length - 1];
    let turn = last;
    if (!last || last.speaker !== seg.speaker || seg.start - last.end > TURN_GAP_S) {
      turn = this.newTurn(seg.speaker, seg.start);
      this.turns.push(turn);
    }
    turn.end = Math.max(turn.end, seg.end);
    const span = el("span", { class: seg.overlap ? "seg overlap" : "seg", title: `${clock(seg.start, true)} – ${clock(seg.end, true)}${seg.overlap ? " · overlapping speech" : ""}` }, seg.text.trim());
    if (turn.text.childNodes.length) turn.text.append(" ");
    turn.text.append(span);
  }

  newTurn(speaker, start, live = false) {
    $("#empty").hidden = true;
    const s = this.speakers.get(speaker);
    const text = el("p", { class: "text" });
    const node = el(
      "article",
      { class: live ? "turn live" : "turn", style: `--spk:${s.color}` },
      el("div", { class: "who" }, speakerButton(speaker), el("time", {}, clock(start))),
      text,
    );
    this.root.append(node);
    return { speaker, start, end: start, node, text };
  }

  drawPartials() {
    for (const n of this.partialNodes) n.remove();
    this.partialNodes = [];
    const sorted = [...this.partials].sort((a, b) => a.start - b.start);
    for (const p of sorted) {
      const span = el("span", { class: "seg partial" }, p.text.trim());
      const last = this.turns[this.turns.length - 1];
      if (last && last.speaker === p.speaker && p.start - last.end <= TURN_GAP_S && sorted.length === 1) {
        const gap = document.createTextNode(" ");
        last.text.append(gap, span);
        this.partialNodes.push(gap, span);
      } else {
        const turn = this.newTurn(p.speaker, p.start, true);
        turn.text.append(span);
        this.partialNodes.push(turn.node);
      }
    }
  }

  refreshNames() {
    this.root.querySelectorAll(".spk[data-speaker]").forEach((b) => (b.textContent = this.speakers.name(b.dataset.speaker)));
  }

  nearBottom() {
    const r = this.root;
    return r.scrollHeight - r.scrollTop - r.clientHeight < 80;
  }

  scrollDown() {
    this.root.scrollTop = this.root.scrollHeight;
  }
}

function speakerButton(label) {
  return el("button", { class: "spk", type: "button", "data-speaker": label, title: "Click to rename" }, speakers.name(label));
}

function startRename(button) {
  const label = button.dataset.speaker;
  const input = el("input", { class: "spk-edit", value: speakers.name(label), "aria-label": "Speaker name", maxLength: 40 });
  button.replaceWith(input);
  input.focus();
  input.select();
  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    if (save) speakers.rename(label, input.value);
    input.replaceWith(button);
    view.refreshNames();
    drawSpeakers();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") finish(true);
    if (e.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
}

function drawSpeakers() {
  const list = $("#speakers");
  if (!speakers.map.size) {
    list.replaceChildren(el("li", { class: "muted small" }, "Nobody yet."));
    return;
  }
  list.replaceChildren(
    ...[...speakers.map.entries()].map(([label, s]) =>
      el("li", { style: `--spk:${s.color}` }, el("span", { class: "swatch" }), speakerButton(label), el("span", { class: "stat", title: `${s.words} words` }, clock(s.talk))),
    ),
  );
}

// --- page state -------------------------------------------------------------------------------

const speakers = new Speakers();
const view = new TranscriptView($("#transcript"), speakers, drawSpeakers);
const capture = new Capture(
  (pcm) => conn.sendAudio(pcm),
  (level) => ($("#level").style.width = `${Math.min(100, Math.sqrt(level) * 180)}%`),
);
let viewing = null; // the session whose transcript is shown (live or loaded)
let uploading = false;
let retryNotice = false;

const conn = new Connection({
  onState: () => render(),
  onReady(msg, resumed) {
    if (resumed) {
      notice.show("info", "Reconnected; the session continues.");
    } else {
      if (viewing && viewing !== msg.session_id && view.finals.length && conn.carryOver) {
        view.divider(`new session ${msg.session_id}`);
      } else if (viewing !== msg.session_id && !conn.carryOver) {
        view.clear();
        speakers.reset(msg.session_id);
        drawSpeakers();
      }
      speakers.sessionId = msg.session_id;
      if (retryNotice) notice.show("info", "Connected.");
      else notice.clear();
    }
    retryNotice = false;
    conn.carryOver = false;
    viewing = msg.session_id;
    render();
    loadSessions();
  },
  onUpdate(msg) {
    if (msg.finals && msg.finals.length) view.addFinals(msg.finals);
    view.setPartials(msg.partials || []);
    showLag(msg);
    if (uploading) progress(msg.audio_processed_s);
  },
  onEnded(msg) {
    view.setPartials([]);
    $("#lag").hidden = true;
  },
  onClosed(ended) {
    capture.running && capture.stop();
    view.setPartials([]);
    render();
    loadSessions();
  },
  onNewSession(oldId) {
    conn.carryOver = true;
    notice.show("warn", "The previous session could not be resumed; the transcript continues in a new session.");
  },
  onRetry(text) {
    retryNotice = true;
    notice.show("warn", text);
  },
  onFailed(text) {
    capture.running && capture.stop();
    notice.show("error", text);
    render();
    loadSessions();
  },
});

function showLag(msg) {
  const lag = $("#lag");
  lag.hidden = false;
  const v = msg.lag_s || 0;
  lag.textContent = `lag ${v.toFixed(1)} s`;
  lag.className = `pill lag ${v < 2 ? "ok" : v < 5 ? "warn" : "bad"}`;
  lag.title = `Transcript is ${v.toFixed(1)} s behind the audio (received ${msg.audio_received_s.toFixed(1)} s, processed ${msg.audio_processed_s.toFixed(1)} s)`;
  $("#clock").textContent = clock(msg.audio_received_s);
}

function render() {
  const s = conn.state;
  const busy = conn.active;
  $("#connect").disabled = busy || uploading;
  $("#start").disabled = capture.running || uploading || s === "stopping";
  $("#stop").disabled = !(busy || capture.running);
  $(".upload").classList.toggle("disabled", capture.running || uploading || s === "stopping");
  $("#file").disabled = capture.running || uploading;
  const labels = {
    idle: "Not connected",
    connecting: "Connecting…",
    live: capture.running ? "Listening" : uploading ? "Transcribing file" : `Connected · ${conn.engine}`,
    reconnecting: "Reconnecting…",
    stopping: "Finishing…",
    ended: "Session ended",
    failed: "Disconnected",
  };
  const pill = $("#conn");
  pill.dataset.state = s === "live" && capture.running ? "capturing" : s;
  pill.querySelector(".label").textContent = labels[s] || s;
  $("#session-id").textContent = viewing ? `session ${viewing}` : "";
  $("#title").textContent = conn.active || !viewing ? "Live transcript" : "Transcript";
  document.querySelectorAll(".exports button").forEach((b) => (b.disabled = !viewing));
  document.querySelectorAll("#sessions li").forEach((li) => li.classList.toggle("current", li.dataset.id === viewing));
}

async function connect() {
  notice.clear();
  conn.reset();
  return conn.open();
}

async function start() {
  notice.clear();
  try {
    await capture.start($("#mic").value);
  } catch (err) {
    notice.show("error", micError(err));
    render();
    return;
  }
  listMicrophones(); // labels appear once permission is granted
  render();
  if (!conn.active) {
    conn.reset();
    conn.open().catch(() => {});
  }
}

async function stop() {
  if (capture.running) capture.stop();
  render();
  await conn.stop();
  render();
}

// --- file upload: decode, resample to 16 kHz, stream faster than real time ---------------------

async function decodeFile(file) {
  const bytes = await file.arrayBuffer();
  // decodeAudioData resamples to the context's rate: a 16 kHz context gives 16 kHz audio.
  const ctx = new OfflineAudioContext(1, 1, RATE);
  const audio = await ctx.decodeAudioData(bytes);
  const n = audio.length;
  const pcm = new Int16Array(n);
  const chans = [];
  for (let c = 0; c < audio.numberOfChannels; c++) chans.push(audio.getChannelData(c));
  for (let i = 0; i < n; i++) {
    let v = 0;
    for (const ch of chans) v += ch[i];
    v = Math.max(-1, Math.min(1, v / chans.length));
    pcm[i] = v < 0 ? v * 0x8000 : v * 0x7fff;
  }
  return pcm;
}

function progress(processedS) {
  const box = $("#progress");
  if (!uploading) return (box.hidden = true);
  box.hidden = false;
  const frac = uploading.duration ? Math.min(1, processedS / uploading.duration) : 0;
  box.querySelector(".bar").style.width = `${(frac * 100).toFixed(1)}%`;
  box.querySelector(".label").textContent = `${uploading.name}: ${clock(processedS)} of ${clock(uploading.duration)} transcribed`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function upload(file) {
  notice.clear();
  let pcm;
  try {
    notice.show("info", `Decoding ${file.name}…`, true);
    pcm = await decodeFile(file);
  } catch (err) {
    notice.show("error", `Could not decode ${file.name}: the browser does not understand this file.`);
    return;
  }
  notice.clear();
  uploading = { name: file.name, duration: pcm.length / RATE };
  progress(0);
  render();
  try {
    if (!conn.live) {
      conn.reset();
      await conn.open({ reconnect: false });
    }
    // Chunked and paced by the server's own progress: never more than a few seconds
    // ahead of what it has processed (its buffer is bounded), and at most 20x real time.
    const chunk = RATE / 2;
    const window = Math.max(2, Math.min(8, (conn.limits ? conn.limits.max_buffered_s : 10) / 2));
    const t0 = performance.now();
    let processed = 0;
    const onUpdate = conn.h.onUpdate;
    conn.h.onUpdate = (msg) => ((processed = msg.audio_processed_s), onUpdate(msg));
    try {
      for (let i = 0; i < pcm.length; i += chunk) {
        const sentS = i / RATE;
        while (conn.live && (sentS - processed > window || conn.ws.bufferedAmount > 1 << 20 || sentS > ((performance.now() - t0) / 1000) * 20)) {
          await sleep(20);
        }
        if (!conn.live) throw new Error("connection lost");
        conn.sendAudio(pcm.slice(i, i + chunk).buffer);
      }
      await conn.stop();
    } finally {
      conn.h.onUpdate = onUpdate;
    }
    notice.show("info", `${file.name} transcribed.`);
  } catch (err) {
    if (conn.state !== "failed") notice.show("error", `Upload stopped: ${err.message || err}`);
  } finally {
    uploading = false;
    $("#progress").hidden = true;
    $("#file").value = "";
    render();
  }
}

// --- past sessions and exports ------------------------------------------------------------------

async function loadSessions() {
  const list = $("#sessions");
  let data;
  try {
    const r = await fetch(api("sessions?limit=50"));
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    data = await r.json();
  } catch {
    list.replaceChildren(el("li", { class: "muted small" }, "Past sessions are unavailable."));
    return;
  }
  const sessions = Array.isArray(data) ? data : data.sessions || [];
  if (!sessions.length) {
    list.replaceChildren(el("li", { class: "muted small" }, "None yet."));
    return;
  }
  list.replaceChildren(
    ...sessions.map((s) => {
      const when = new Date((s.created || 0) * 1000);
      const today = when.toDateString() === new Date().toDateString();
      const label = today ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : when.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      const bits = [clock(s.audio_s), `${s.speakers ?? "?"} speaker${s.speakers === 1 ? "" : "s"}`, `${s.segments ?? 0} segments`];
      if (s.source && s.source !== "live") bits.push(s.source);
      return el(
        "li",
        { "data-id": s.id, class: s.id === viewing ? "current" : "" },
        el("button", { class: "open", type: "button", title: s.id, onclick: () => openSession(s.id) }, el("div", { class: "when" }, label, s.status === "live" ? el("span", { class: "badge live" }, "live") : null), el("div", { class: "meta" }, bits.join(" · "))),
        s.status === "live" ? null : el("button", { class: "icon-btn del", type: "button", title: "Delete", "aria-label": "Delete session", onclick: () => deleteSession(s.id) }, "×"),
      );
    }),
  );
}

async function openSession(id) {
  if (conn.active) {
    notice.show("warn", "Stop the live session before opening another one.");
    return;
  }
  let data;
  try {
    const r = await fetch(api(`sessions/${encodeURIComponent(id)}`));
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    data = await r.json();
  } catch (err) {
    notice.show("error", `Could not load session ${id}: ${err.message}`);
    return;
  }
  const t = data.transcript || data;
  view.clear();
  speakers.reset(id);
  viewing = id;
  view.addFinals(t.segments || []);
  drawSpeakers();
  $("#lag").hidden = true;
  $("#clock").textContent = clock(t.duration);
  render();
}

async function deleteSession(id) {
  if (!confirm(`Delete session ${id}? Its transcript is removed from the server.`)) return;
  const r = await fetch(api(`sessions/${encodeURIComponent(id)}`), { method: "DELETE" });
  if (!r.ok) notice.show("error", `Could not delete ${id} (HTTP ${r.status}).`);
  if (viewing === id && !conn.active) {
    viewing = null;
    view.clear();
    speakers.reset(null);
    drawSpeakers();
  }
  loadSessions();
  render();
}

function exportAs(format) {
  if (!viewing) return;
  const params = new URLSearchParams({ format });
  if (Object.keys(speakers.names).length) params.set("names", JSON.stringify(speakers.names));
  const a = el("a", { href: api(`sessions/${encodeURIComponent(viewing)}?${params}`), download: `hubbub-${viewing}.${format}` });
  document.body.append(a);
  a.click();
  a.remove();
}

// --- wiring -----------------------------------------------------------------------------------

$("#connect").addEventListener("click", () => connect().catch(() => {}));
$("#start").addEventListener("click", start);
$("#stop").addEventListener("click", stop);
$("#file").addEventListener("change", (e) => e.target.files[0] && upload(e.target.files[0]));
$("#refresh").addEventListener("click", loadSessions);
$("#notice .close").addEventListener("click", () => notice.clear());
$("#mic").addEventListener("change", async () => {
  if (!capture.running) return;
  capture.stop();
  try {
    await capture.start($("#mic").value);
  } catch (err) {
    notice.show("error", micError(err));
  }
  render();
});
document.querySelectorAll(".exports button").forEach((b) => b.addEventListener("click", () => exportAs(b.dataset.format)));
document.addEventListener("click", (e) => {
  const b = e.target.closest(".spk[data-speaker]");
  if (b) startRename(b);
});
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", listMicrophones);
}
window.addEventListener("beforeunload", (e) => {
  if (capture.running || uploading) e.preventDefault();
});

listMicrophones();
loadSessions();
render();

// For tests and the curious: the live state, read-only in spirit.
window.hubbub = { conn, view, speakers, capture };

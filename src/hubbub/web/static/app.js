// hubbub web UI: microphone or file -> 16 kHz int16 -> WS /ws (protocol v1) -> live transcript.
// No build step, no dependencies: ES modules the browser loads as they are. The page speaks the
// same protocol as any other client (connection.js); audio.js captures and decodes;
// transcript.js draws finals and partials; this file ties them to the controls.

import { Capture, decodeFile, micError } from "./audio.js";
import { Connection } from "./connection.js";
import { Speakers, TranscriptView, speakerButton } from "./transcript.js";
import { $, RATE, api, clock, el, notice } from "./util.js";

// --- microphones ------------------------------------------------------------------------------

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

// --- speakers ----------------------------------------------------------------------------------

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
    if (save) saveName(label, speakers.rename(label, input.value));
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

let pendingSave = Promise.resolve();

function saveName(label, name) {
  const id = speakers.sessionId;
  if (!id) return;
  pendingSave = fetch(api(`sessions/${encodeURIComponent(id)}/speakers`), {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ [label]: name }),
  })
    .then((r) => {
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
    })
    .catch((err) => notice.show("warn", `The name shows here but was not saved with the session (${err.message}).`));
}

function drawSpeakers() {
  const list = $("#speakers");
  if (list.querySelector(".spk-edit")) return; // a name being typed: redrawn when done
  if (!speakers.map.size) {
    list.replaceChildren(el("li", { class: "muted small" }, "Nobody yet."));
    return;
  }
  list.replaceChildren(
    ...[...speakers.map.entries()].filter(([, s]) => s.talk > 0).map(([label, s]) =>
      el("li", { style: `--spk:${s.color}` }, el("span", { class: "swatch" }), speakerButton(speakers, label), el("span", { class: "stat", title: `${s.words} words` }, clock(s.talk))),
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
    if (msg.finals && msg.finals.length) {
      view.addFinals(msg.finals);
      if (Date.now() - sessionsLoadedAt > 15000) loadSessions();
    }
    view.setPartials(msg.partials || []);
    showLag(msg);
    if (uploading) progress(msg.audio_processed_s);
  },
  onSpeakers(msg) {
    view.relabel(msg.relabel || {});
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
  onLost(text) {
    notice.show("error", text);
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

function progress(processedS) {
  const box = $("#progress");
  if (!uploading) return (box.hidden = true);
  box.hidden = false;
  const frac = uploading.duration ? Math.min(1, processedS / uploading.duration) : 0;
  box.querySelector(".bar").style.width = `${(frac * 100).toFixed(1)}%`;
  box.querySelector(".label").textContent = `${uploading.name}: ${clock(processedS)} of ${clock(uploading.duration)} transcribed`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const WINDOW_S = 1.5; // how far an upload runs ahead of the server's progress
const STALL_MS = 1500;

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
    // Chunked and paced by the server's own progress: at most WINDOW_S ahead of what it has
    // processed (its buffer is bounded, and a session far behind counts as lag that keeps
    // others out), and at most 20x real time. Progress can go quiet when the server has
    // nothing new to say; after STALL_MS without an update one more chunk goes anyway.
    const chunk = RATE / 2;
    const maxAhead = Math.min(WINDOW_S, conn.limits ? conn.limits.max_buffered_s / 2 : WINDOW_S);
    const t0 = performance.now();
    let processed = 0;
    let heard = performance.now();
    const onUpdate = conn.h.onUpdate;
    conn.h.onUpdate = (msg) => ((processed = msg.audio_processed_s), (heard = performance.now()), onUpdate(msg));
    try {
      for (let i = 0; i < pcm.length; i += chunk) {
        const sentS = i / RATE;
        const ahead = () => sentS - processed > maxAhead && performance.now() - heard < STALL_MS;
        while (conn.live && (ahead() || conn.ws.bufferedAmount > 1 << 20 || sentS > ((performance.now() - t0) / 1000) * 20)) {
          await sleep(20);
        }
        heard = Math.max(heard, performance.now() - STALL_MS / 2);
        if (!conn.live) throw new Error("connection lost");
        conn.sendAudio(pcm.slice(i, i + chunk).buffer);
      }
      await conn.stop();
    } finally {
      conn.h.onUpdate = onUpdate;
    }
    notice.show("info", `${file.name} transcribed.`);
  } catch (err) {
    if (["stopping", "ended"].includes(conn.state)) notice.show("info", `Upload stopped; what was sent is transcribed.`);
    else if (conn.state !== "failed") notice.show("error", `Upload stopped: ${err.message || err}`);
  } finally {
    uploading = false;
    $("#progress").hidden = true;
    $("#file").value = "";
    render();
  }
}

// --- past sessions and exports ------------------------------------------------------------------

let sessionsLoadedAt = 0;

async function loadSessions() {
  sessionsLoadedAt = Date.now();
  const list = $("#sessions");
  let data;
  try {
    const r = await fetch(api("sessions?limit=50"));
    if (!r.ok) throw new Error(r.status === 401 ? "key" : `HTTP ${r.status}`);
    data = await r.json();
  } catch (err) {
    const why = err.message === "key" ? "Past sessions need an access key (open the page as …/?token=YOUR_KEY)." : "Past sessions are unavailable.";
    list.replaceChildren(el("li", { class: "muted small" }, why));
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
      const bits = [clock(s.audio_s), `${s.speakers ?? "?"} speaker${s.speakers === 1 ? "" : "s"}`, `${s.segments ?? 0} segment${s.segments === 1 ? "" : "s"}`];
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
  speakers.reset(id, t.speaker_names || {});
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

async function exportAs(format) {
  if (!viewing) return;
  await pendingSave; // a name just given must be in the export
  const params = new URLSearchParams({ format });
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

// The transcript as the protocol defines it: finals are immutable and appended (deduplicated
// by id, so a resumed stream may replay them); partials are the whole current tail per
// speaker and replace the previous one. Speakers get a colour and an editable name.

import { clock, el } from "./util.js";

const TURN_GAP_S = 3; // same speaker within this gap continues the same paragraph
const PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d"];

export class Speakers {
  constructor() {
    this.reset(null);
  }

  // Names live on the server with the session (PUT .../speakers), so exports carry them.
  reset(sessionId, names = {}) {
    this.sessionId = sessionId;
    this.map = new Map(); // label -> {color, fallback, talk, words}
    this.names = { ...names };
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

  // Returns the name to store for the label ("" clears it).
  rename(label, name) {
    name = name.trim();
    const keep = name && name !== this.get(label).fallback;
    if (keep) this.names[label] = name;
    else delete this.names[label];
    return keep ? name : "";
  }

  count(seg) {
    const s = this.get(seg.speaker);
    s.talk += Math.max(0, seg.end - seg.start);
    s.words += seg.text.split(/\s+/).filter(Boolean).length;
  }

  // After speakers were revised: talk time and words from the finals as they are now.
  recount(finals) {
    for (const s of this.map.values()) (s.talk = 0), (s.words = 0);
    for (const seg of finals) this.count(seg);
  }
}

export class TranscriptView {
  constructor(root, speakers, onSpeakersChanged) {
    this.root = root;
    this.speakers = speakers;
    this.onSpeakersChanged = onSpeakersChanged;
    this.clear();
  }

  clear() {
    this.finals = [];
    this.ids = new Map(); // id -> text: a resumed stream may send a final again
    this.partials = [];
    this.turns = [];
    this.partialNodes = [];
    this.root.querySelectorAll(".turn, .divider").forEach((n) => n.remove());
    this.root.querySelector(".empty").hidden = false;
  }

  divider(text) {
    this.root.append(el("div", { class: "divider" }, text));
    this.turns.push(null); // a new session always starts a new turn
  }

  addFinals(segments) {
    const stick = this.nearBottom();
    let reflow = false;
    for (const seg of segments) {
      if (this.ids.has(seg.id)) {
        if (this.ids.get(seg.id) === seg.text) continue; // the same final, seen again
        console.warn(`hubbub: final ${seg.id} came again with other text; both are shown`);
      }
      this.ids.set(seg.id, seg.text);
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

  // A second look at the speakers revised finals already shown ({id: speaker}). Their text
  // stays; turns re-form around their new speakers, the reader's place kept.
  relabel(map) {
    let changed = false;
    for (const seg of this.finals) {
      const now = map[seg.id];
      if (now && now !== seg.speaker) (seg.speaker = now), (changed = true);
    }
    if (!changed) return;
    const stick = this.nearBottom();
    const top = this.root.scrollTop;
    this.speakers.recount(this.finals);
    this.rebuild();
    this.drawPartials();
    if (stick) this.scrollDown();
    else this.root.scrollTop = top;
    this.onSpeakersChanged();
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
    const span = el("span", { class: seg.overlap ? "seg overlap" : "seg", "data-id": seg.id, title: `${clock(seg.start, true)} – ${clock(seg.end, true)}${seg.overlap ? " · overlapping speech" : ""}` }, seg.text.trim());
    if (turn.text.childNodes.length) turn.text.append(" ");
    turn.text.append(span);
  }

  newTurn(speaker, start, live = false) {
    this.root.querySelector(".empty").hidden = true;
    const s = this.speakers.get(speaker);
    const text = el("p", { class: "text" });
    const node = el(
      "article",
      { class: live ? "turn live" : "turn", style: `--spk:${s.color}` },
      el("div", { class: "who" }, speakerButton(this.speakers, speaker), el("time", {}, clock(start))),
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

export function speakerButton(speakers, label) {
  return el("button", { class: "spk", type: "button", "data-speaker": label, title: "Click to rename" }, speakers.name(label));
}

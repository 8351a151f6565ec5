// Small helpers shared by the page's modules: DOM building, time formatting, URLs, notices.

export const RATE = 16000; // what the page streams: 16 kHz mono pcm_s16le

export const $ = (sel) => document.querySelector(sel);
export const base = new URL(".", location.href);
// A server with an API key is opened once as /?token=KEY: the server keeps the key in a
// cookie this page cannot read and sends it on, so the key is never in a URL the page makes.
export const wsUrl = () => `${base.protocol === "https:" ? "wss" : "ws"}://${base.host}${base.pathname}ws`;
export const api = (path) => new URL(`api/${path}`, base).toString();

export function clock(s, withMs = false) {
  s = Math.max(0, s || 0);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = withMs ? (s % 60).toFixed(1).padStart(4, "0") : String(Math.floor(s % 60)).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

export function el(tag, attrs = {}, ...children) {
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

export const notice = {
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


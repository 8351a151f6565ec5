// Audio into the page: the microphone through the capture worklet (audio-worklet.js), and
// files decoded and resampled by the browser. Both come out as 16 kHz int16 PCM.

import { RATE, base } from "./util.js";

const FRAME_MS = 100;

export class Capture {
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

export function micError(err) {
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

export async function decodeFile(file) {
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

// Microphone capture on the audio thread: mix to mono, resample from the context rate
// (usually 48 kHz) to 16 kHz with a windowed-sinc low-pass, convert to int16 and post
// ~100 ms frames ({pcm: ArrayBuffer, level: RMS 0..1}) to the page.

const ZERO_CROSSINGS = 8; // kernel half-width, in zero crossings of the low-pass sinc
const TABLE_RES = 128; // kernel samples per input sample (linear interpolation between)

class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.outRate = opts.targetRate || 16000;
    this.step = sampleRate / this.outRate; // input samples per output sample
    // Cut off a little below the output Nyquist so nothing aliases into speech bands.
    this.cutoff = Math.min(1, this.outRate / sampleRate) * 0.92;
    this.half = Math.ceil(ZERO_CROSSINGS / this.cutoff); // input samples each side
    this.table = PcmCapture.kernel(this.cutoff, this.half);
    this.buf = new Float32Array(8192);
    this.len = this.half; // start with `half` samples of silence as history
    this.pos = this.half; // input position of the next output sample
    this.frameLen = Math.round((this.outRate * (opts.frameMs || 100)) / 1000);
    this.frame = new Int16Array(this.frameLen);
    this.fill = 0;
    this.sumSq = 0;
    this.active = true;
    this.port.onmessage = (ev) => {
      if (ev.data === "stop") this.active = false;
    };
  }

  static kernel(cutoff, half) {
    // h(d) = cutoff * sinc(cutoff * d) * blackman(d / half), tabulated for d in [0, half].
    const n = half * TABLE_RES + 2;
    const table = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const d = i / TABLE_RES;
      if (d > half) break;
      const x = Math.PI * cutoff * d;
      const sinc = d === 0 ? 1 : Math.sin(x) / x;
      const w = 0.42 + 0.5 * Math.cos((Math.PI * d) / half) + 0.08 * Math.cos((2 * Math.PI * d) / half);
      table[i] = cutoff * sinc * w;
    }
    return table;
  }

  tap(d) {
    const a = Math.abs(d) * TABLE_RES;
    const i = a | 0;
    const f = a - i;
    return this.table[i] * (1 - f) + this.table[i + 1] * f;
  }

  push(block) {
    if (this.len + block.length > this.buf.length) {
      const bigger = new Float32Array((this.len + block.length) * 2);
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(block, this.len);
    this.len += block.length;
  }

  emit(sample) {
    const s = Math.max(-1, Math.min(1, sample));
    this.frame[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    this.sumSq += s * s;
    if (this.fill === this.frameLen) {
      const level = Math.sqrt(this.sumSq / this.frameLen);
      this.port.postMessage({ pcm: this.frame.buffer, level }, [this.frame.buffer]);
      this.frame = new Int16Array(this.frameLen);
      this.fill = 0;
      this.sumSq = 0;
    }
  }

  process(inputs) {
    if (!this.active) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const n = input[0].length;
    const mono = new Float32Array(n);
    for (const ch of input) for (let i = 0; i < n; i++) mono[i] += ch[i] / input.length;
    this.push(mono);

    const half = this.half;
    const buf = this.buf;
    while (this.pos + half < this.len) {
      const center = Math.floor(this.pos);
      let acc = 0;
      for (let k = center - half + 1; k <= center + half; k++) acc += buf[k] * this.tap(this.pos - k);
      this.emit(acc);
      this.pos += this.step;
    }
    // Keep only the history the next outputs need.
    const drop = Math.floor(this.pos) - half;
    if (drop > 0) {
      buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.pos -= drop;
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);

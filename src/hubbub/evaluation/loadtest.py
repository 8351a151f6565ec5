"""Load test on real servers over loopback: N live streams at the pace of speech.

Starts ``hubbub transcriber`` in a process of its own (so its memory is measured alone),
streams N different recordings concurrently in real time, tries one stream more than the
server admits, and then checks every stream's finals against the same audio transcribed
alone through the file endpoint: nothing lost, nothing mixed between sessions.
Also measures what the web app's relay adds to a round trip (ping/pong, direct vs relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tempfile
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import soundfile as sf
from scipy.optimize import linear_sum_assignment

from hubbub.audio import SAMPLE_RATE, float_to_pcm16
from hubbub.client import TranscriberClient, TranscriberError
from hubbub.evaluation.benchmark import percentile
from hubbub.evaluation.cluster import Replicas, free_port, nginx, postgres_server, spawn
from hubbub.evaluation.metrics import wer
from hubbub.pacing import Pacer
from hubbub.protocol import Ended, ErrorMessage, Pong, SpeakersUpdate, Start, TranscriptUpdate

FRAME_S = 0.1


def process_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class StreamResult:
    name: str
    lags: list[float] = field(default_factory=list)
    finals: list[dict] = field(default_factory=list)
    # Wall time from a final's last word being sent (at the pace of speech) to its arrival.
    final_latency: list[float] = field(default_factory=list)
    ended: bool = False
    error: str | None = None


async def stream_realtime(url: str, name: str, audio: np.ndarray) -> StreamResult:
    """Send ``audio`` at the pace of speech; collect every update until ``ended``. A
    full replica is tried again, as ``hubbub stream`` does (behind a load balancer the
    next try may land on a replica with room)."""
    result = StreamResult(name)
    async with TranscriberClient(url) as client:
        try:
            stream = await client.open_resumable(Start(type="start"), open_within_s=10)
        except TranscriberError as exc:
            result.error = exc.code
            return result
        pacer = Pacer()

        async def send() -> None:
            frame = int(FRAME_S * SAMPLE_RATE)
            for i in range(0, len(audio), frame):
                await pacer.until(i / SAMPLE_RATE)
                await stream.send_audio(float_to_pcm16(audio[i : i + frame]))
            await stream.stop()

        sender = asyncio.create_task(send())
        async for msg in stream:
            if isinstance(msg, TranscriptUpdate):
                result.lags.append(msg.lag_s)
                result.finals += [seg.model_dump() for seg in msg.finals]
                now = pacer.elapsed_s
                result.final_latency += [now - seg.end for seg in msg.finals]
            elif isinstance(msg, SpeakersUpdate):  # a second look revised some speakers
                for seg in result.finals:
                    seg["speaker"] = msg.relabel.get(seg["id"], seg["speaker"])
            elif isinstance(msg, Ended):
                result.ended = True
                break
            elif isinstance(msg, ErrorMessage):
                result.error = msg.code
                break
        sender.cancel()
        await stream.close()
    return result


def speaker_agreement(a: list[dict], b: list[dict]) -> float:
    """Share of speech (segments of the same text, in the same order) that two transcripts
    give the same speaker, their labels matched one to one. Labels are decisions near a
    threshold: sessions sharing a batch can move one by a rounding."""
    labels_a = sorted({s["speaker"] for s in a})
    labels_b = sorted({s["speaker"] for s in b})
    both = np.zeros((len(labels_a), len(labels_b)))
    for x, y in zip(a, b, strict=True):
        both[labels_a.index(x["speaker"]), labels_b.index(y["speaker"])] += x["end"] - x["start"]
    rows, cols = linear_sum_assignment(-both)
    return round(float(both[rows, cols].sum() / max(both.sum(), 1e-9)), 4)


async def try_extra(url: str) -> str:
    """Open one stream more: the answer is 'ready' or the refusal's error code."""
    async with TranscriberClient(url) as client:
        try:
            stream = await client.open_stream(Start(type="start"))
        except TranscriberError as exc:
            return exc.code
        await stream.stop()
        await stream.close()
        return "ready"


def transcribe_alone(base_url: str, audio: np.ndarray) -> list[dict]:
    buf = io.BytesIO()
    # The very samples the live stream sent (int16), so both paths decode the same audio.
    pcm = np.frombuffer(float_to_pcm16(audio), dtype="<i2")
    sf.write(buf, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    r = httpx.post(
        base_url + "/v1/audio/transcriptions",
        files={"file": ("a.wav", buf.getvalue(), "audio/wav")},
        data={"response_format": "diarized_json"},
        timeout=600,
    )
    r.raise_for_status()
    return r.json()["segments"]


@dataclass
class LoadResult:
    streams: int
    seconds: float
    capacity: int
    held_realtime: int
    extra_stream: str
    lag_p50: float | None
    lag_p95: float | None
    lag_max: float | None
    final_latency_p50: float | None
    final_latency_p95: float | None
    via: str
    rss_start_mb: float
    rss_warm_mb: float
    rss_end_mb: float
    identical: int
    per_stream: list[dict]

    @property
    def rss_growth(self) -> float:
        """Growth after the first minute under load (or from the start, if shorter)."""
        return (self.rss_end_mb - self.rss_warm_mb) / max(self.rss_warm_mb, 1e-9)

    def to_json(self) -> dict:
        out = self.__dict__.copy()
        out["rss_growth"] = round(self.rss_growth, 4)
        return out


def run_load(audios: dict[str, np.ndarray], via_web: bool = False, replicas: int = 1) -> LoadResult:
    """Run the load test against a fresh transcriber process (and web app) on free ports;
    with ``replicas`` > 1, against that many behind nginx on one PostgreSQL store, each
    admitting its share of the streams."""
    with contextlib.ExitStack() as stack:
        share = -(-len(audios) // replicas)
        env = {
            "HUBBUB_ENGINE": "cpu",
            "HUBBUB_MAX_SESSIONS": str(share),
            "HUBBUB_TRUSTED_PROXIES": '["127.0.0.1"]',  # the web app speaks for browsers
        }
        if replicas > 1:
            pg = stack.enter_context(postgres_server())
            cluster = stack.enter_context(Replicas(pg.new_database(), replicas, env))
            procs = list(cluster.procs.values())
            base = url = stack.enter_context(nginx(cluster.ports))
        else:
            port = free_port()
            base = url = f"http://127.0.0.1:{port}"
            env |= {
                "HUBBUB_PORT": str(port),
                "HUBBUB_DATA_DIR": stack.enter_context(tempfile.TemporaryDirectory()),
            }
            procs = [stack.enter_context(spawn(["transcriber"], env, base + "/health"))]
        if via_web:
            wport = free_port()
            web_env = {"HUBBUB_TRANSCRIBER_URL": base, "HUBBUB_WEB_PORT": str(wport)}
            url = f"http://127.0.0.1:{wport}"
            stack.enter_context(spawn(["web"], web_env, url + "/health"))

        def rss_mb() -> float:
            return sum(process_rss_mb(p.pid) for p in procs)

        # Warm the server's code paths once so the start figure is the steady state.
        first = next(iter(audios.values()))
        transcribe_alone(base, first[: 5 * SAMPLE_RATE])
        rss_start = rss_mb()
        capacity = httpx.get(base + "/health").json()["capacity"] * replicas

        rss_samples: list[tuple[float, float]] = []

        async def sample_rss() -> None:
            t0 = time.monotonic()
            while True:
                rss_samples.append((time.monotonic() - t0, rss_mb()))
                await asyncio.sleep(5.0)

        async def main() -> tuple[list[StreamResult], str]:
            sampler = asyncio.create_task(sample_rss())
            tasks = []
            for name, audio in audios.items():
                tasks.append(asyncio.create_task(stream_realtime(url, name, audio)))
                await asyncio.sleep(0.5)
            await asyncio.sleep(2.0)
            extra = await try_extra(url)
            results = list(await asyncio.gather(*tasks))
            sampler.cancel()
            return results, extra

        results, extra = asyncio.run(main())
        rss_end = rss_mb()
        # Steady state: memory once every stream has run a minute (allocator pools and
        # model workspaces grow to the batch sizes seen), against the end of the run.
        rss_warm = next((m for t, m in rss_samples if t >= 60.0), rss_start)
        identical = 0
        per_stream = []
        for r in results:
            alone = transcribe_alone(base, audios[r.name])
            mine, theirs = [s["text"] for s in r.finals], [s["text"] for s in alone]
            # Live, words turn final as decodes agree, on a schedule that yields to load:
            # the same words may come in other pieces, or (rarely) differ.
            same = " ".join(mine).split() == " ".join(theirs).split()
            identical += same
            diff = next(
                ([a, b] for a, b in zip(mine, theirs, strict=False) if a != b),
                None if same else [mine[len(theirs) :], theirs[len(mine) :]],
            )
            per_stream.append(
                {
                    "name": r.name,
                    "ended": r.ended,
                    "error": r.error,
                    "finals": len(r.finals),
                    "lag_p95": percentile(r.lags, 95),
                    "identical_to_alone": same,
                    "first_difference": None if same else diff,
                    "wer_vs_alone": round(wer(" ".join(theirs), " ".join(mine)).rate, 4),
                    "speakers_agree": (
                        speaker_agreement(r.finals, alone) if mine == theirs else None
                    ),
                }
            )
    lags = [x for r in results for x in r.lags]
    latency = [x for r in results for x in r.final_latency]
    held = sum(1 for r in results if r.ended and (percentile(r.lags, 95) or 0) < 3.0)
    return LoadResult(
        streams=len(audios),
        seconds=max(len(a) for a in audios.values()) / SAMPLE_RATE,
        capacity=capacity,
        held_realtime=held,
        extra_stream=extra,
        lag_p50=percentile(lags, 50),
        lag_p95=percentile(lags, 95),
        lag_max=max(lags) if lags else None,
        final_latency_p50=percentile(latency, 50),
        final_latency_p95=percentile(latency, 95),
        via=("web app relay -> " if via_web else "")
        + (f"nginx -> {replicas} replicas" if replicas > 1 else "transcriber"),
        rss_start_mb=round(rss_start, 1),
        rss_warm_mb=round(rss_warm, 1),
        rss_end_mb=round(rss_end, 1),
        identical=identical,
        per_stream=per_stream,
    )


async def _ping_rtts(url: str, n: int) -> list[float]:
    async with TranscriberClient(url) as client:
        stream = await client.open_stream(Start(type="start"))
        messages = aiter(stream)
        rtts = []
        for _ in range(n):
            t0 = time.perf_counter()
            await stream.ping()
            while not isinstance(await anext(messages), Pong):
                pass
            rtts.append(time.perf_counter() - t0)
            await asyncio.sleep(0.01)
        await stream.stop()
        await stream.close()
    return rtts


def run_relay_overhead(n: int = 300) -> dict:
    """Round trips straight to the transcriber and through the web app's relay."""
    tport, wport = free_port(), free_port()
    tbase, wbase = f"http://127.0.0.1:{tport}", f"http://127.0.0.1:{wport}"
    with (
        tempfile.TemporaryDirectory() as data,
        spawn(
            ["transcriber"],
            {"HUBBUB_PORT": str(tport), "HUBBUB_DATA_DIR": data, "HUBBUB_ENGINE": "cpu"},
            tbase + "/health",
        ),
        spawn(
            ["web"],
            {"HUBBUB_TRANSCRIBER_URL": tbase, "HUBBUB_WEB_PORT": str(wport)},
            wbase + "/health",
        ),
    ):
        direct = asyncio.run(_ping_rtts(tbase, n))
        relay = asyncio.run(_ping_rtts(wbase, n))
    ms = 1000.0
    return {
        "pings": n,
        "direct_p50_ms": round(percentile(direct, 50) * ms, 2),
        "direct_p95_ms": round(percentile(direct, 95) * ms, 2),
        "relay_p50_ms": round(percentile(relay, 50) * ms, 2),
        "relay_p95_ms": round(percentile(relay, 95) * ms, 2),
        "added_p95_ms": round((percentile(relay, 95) - percentile(direct, 95)) * ms, 2),
    }

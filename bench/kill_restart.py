"""Lose nothing across kill -9: a real-time stream through repeated crashes of its server.

Streams a recording at the pace of speech through ``hubbub.client.ResumingStream`` (the
client of ``hubbub stream``; with ``--via-web`` through the web app's relay, as the page
does), and every ``--every`` seconds kills the transcriber process with SIGKILL and starts
it again. With ``--replicas 2``, two transcribers share a PostgreSQL store behind nginx
(hubbub.evaluation.cluster): the replica holding the stream is killed, the stream goes on
on the other, and the killed one is started again in the background, as an orchestrator
would. Then it counts what a user would: finals seen twice, finals stored but never seen
(or seen but not stored), ids used twice, gaps in ``seq``, and the text against the same
recording streamed with no crash (WER between the two), plus how long each resume took
from the kill.

    python bench/kill_restart.py tests/data/speech/synthetic/synthetic_conv_4spk.flac \\
        --kills 10 --every 8 [--via-web | --replicas 2 --loops 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from hubbub.audio import float_to_pcm16
from hubbub.client import TranscriberClient
from hubbub.decode import load_audio
from hubbub.evaluation.cluster import Replicas, free_port, nginx, postgres_server, spawn
from hubbub.evaluation.metrics import wer
from hubbub.pacing import Pacer
from hubbub.protocol import SpeakersUpdate, TranscriptUpdate

FRAME = 3200  # 0.1 s of 16 kHz int16


def services(data_dir: Path, port: int, web_port: int | None):
    env = {
        "HUBBUB_ENGINE": "cpu",
        "HUBBUB_DATA_DIR": str(data_dir),
        "HUBBUB_PORT": str(port),
        "HUBBUB_TRUSTED_PROXIES": '["127.0.0.1"]',
    }
    transcriber = lambda: spawn(["transcriber"], env, f"http://127.0.0.1:{port}/health")  # noqa: E731
    web = None
    if web_port is not None:
        web_env = {
            "HUBBUB_TRANSCRIBER_URL": f"http://127.0.0.1:{port}",
            "HUBBUB_WEB_PORT": str(web_port),
        }
        web = lambda: spawn(["web"], web_env, f"http://127.0.0.1:{web_port}/health")  # noqa: E731
    return transcriber, web


async def stream(url: str, pcm: bytes, kill_at: list[float], restart) -> dict:
    client = TranscriberClient(url)
    s = await client.open_resumable(resume_within_s=120)
    updates: list[TranscriptUpdate] = []
    other: list[str] = []
    kills: list[tuple[float, float]] = []  # (session time, wall time) of each kill

    async def send() -> None:
        pacer = Pacer()
        todo = list(kill_at)
        for i in range(0, len(pcm), FRAME):
            at = i / 32000
            if todo and at >= todo[0]:
                todo.pop(0)
                kills.append((at, time.monotonic()))
                await asyncio.to_thread(restart)
            await pacer.until(i / 32000)
            await s.send_audio(pcm[i : i + FRAME])
        await s.stop()

    sender = asyncio.create_task(send())
    arrivals: list[float] = []
    async for msg in s:
        if isinstance(msg, TranscriptUpdate):
            updates.append(msg)
            arrivals.append(time.monotonic())
        elif not isinstance(msg, SpeakersUpdate):  # revised speakers: text unchanged
            other.append(msg.type)
    await sender
    await client.aclose()
    # How long after each kill the first update of the resumed stream arrived.
    resumed_after = []
    for _, wall in kills:
        later = [a for a in arrivals if a > wall]
        if later:
            resumed_after.append(round(later[0] - wall, 2))
    return {
        "session_id": s.session_id,
        "updates": updates,
        "other": other,
        "resumes": s.resumes,
        "resumed_after_s": resumed_after,
    }


def score(run: dict, stored: list[dict], reference_text: str) -> dict:
    finals = [seg for u in run["updates"] for seg in u.finals]
    seen = Counter(seg.id for seg in finals)
    stored_ids = [s["id"] for s in stored]
    seqs = [u.seq for u in run["updates"]]
    gaps = sum(1 for a, b in itertools.pairwise(seqs) if b - a > 1)
    text = " ".join(seg.text for seg in sorted(finals, key=lambda s: s.start))
    return {
        "finals": len(finals),
        "seen_twice": sum(n - 1 for n in seen.values() if n > 1),
        "stored_not_seen": len(set(stored_ids) - set(seen)),
        "seen_not_stored": len(set(seen) - set(stored_ids)),
        "ids_reused": len(stored_ids) - len(set(stored_ids)),
        "seq_gaps": gaps,
        "ended": run["other"] == ["ended"],
        "wer_vs_uninterrupted": round(wer(reference_text, text).rate, 4),
        "resumed_after_s": run["resumed_after_s"],
    }


def one_run(pcm: bytes, kill_at: list[float], via_web: bool) -> dict:
    """Fresh services in a fresh store; the stream, and what the store holds after."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        port = free_port()
        web_port = free_port() if via_web else None
        start_transcriber, start_web = services(Path(tmp), port, web_port)
        procs = [stack.enter_context(start_transcriber())]
        url = f"http://127.0.0.1:{port}"
        if start_web is not None:
            stack.enter_context(start_web())
            url = f"http://127.0.0.1:{web_port}"

        def restart() -> None:
            procs[-1].kill()
            procs[-1].wait(timeout=10)
            procs.append(stack.enter_context(start_transcriber()))

        t = asyncio.run(stream(url, pcm, kill_at, restart))
        api = f"http://127.0.0.1:{port}/v1/sessions/{t['session_id']}"
        t["stored"] = httpx.get(api).json()["transcript"]["segments"]
    return t


def one_run_replicas(pcm: bytes, kill_at: list[float], n: int) -> dict:
    """``n`` replicas on one PostgreSQL store behind nginx; each kill hits the replica
    holding the stream, which comes back in the background."""
    with (
        postgres_server() as pg,
        Replicas(pg.new_database(), n) as replicas,
        nginx(replicas.ports) as lb,
    ):
        comebacks: list[threading.Thread] = []

        def kill() -> None:
            deadline = time.monotonic() + 10
            while not (holders := replicas.holding()) and time.monotonic() < deadline:
                time.sleep(0.1)  # the stream is between replicas: wait for its new one
            port = holders[0] if holders else next(iter(replicas.procs))
            replicas.kill(port)
            comeback = threading.Thread(target=replicas.start, args=(port,))
            comeback.start()
            comebacks.append(comeback)

        t = asyncio.run(stream(lb, pcm, kill_at, kill))
        for comeback in comebacks:
            comeback.join()
        t["stored"] = httpx.get(f"{lb}/v1/sessions/{t['session_id']}").json()["transcript"][
            "segments"
        ]
    return t


def run(path: Path, kills: int, every: float, via_web: bool, replicas: int, loops: int) -> dict:
    audio = load_audio(path)
    pcm = float_to_pcm16(audio) * loops
    duration = loops * len(audio) / 16000
    kill_at = [every * (k + 1) for k in range(kills) if every * (k + 1) < duration - 2]
    clean_run = one_run(pcm, [], via_web)
    print(f"uninterrupted: {len(clean_run['updates'])} updates", flush=True)
    if replicas > 1:
        killed = one_run_replicas(pcm, kill_at, replicas)
    else:
        killed = one_run(pcm, kill_at, via_web)
    print(f"with {len(kill_at)} kills: {len(killed['updates'])} updates", flush=True)
    clean = " ".join(s["text"] for s in clean_run["stored"])
    report = score(killed, killed["stored"], clean)
    report.update(
        kills=len(kill_at), audio_s=round(duration, 1), via_web=via_web, replicas=replicas
    )
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("audio", type=Path)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--every", type=float, default=8.0, help="seconds of audio between kills")
    p.add_argument("--via-web", action="store_true", help="through the web app's relay")
    p.add_argument("--replicas", type=int, default=1, help="2+: replicas behind nginx")
    p.add_argument("--loops", type=int, default=1, help="stream the recording this often")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    report = run(args.audio, args.kills, args.every, args.via_web, args.replicas, args.loops)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

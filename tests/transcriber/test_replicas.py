"""Two transcriber replicas (real processes) on one PostgreSQL store, behind nginx, the web
app relaying through it: a stream whose replica is killed with SIGKILL mid-utterance goes
on on the other one, with every final once, its speakers' labels kept, and the utterance
it was in recovered."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import httpx

from hubbub.audio import SAMPLE_RATE, float_to_pcm16
from hubbub.client import TranscriberClient
from hubbub.decode import load_audio
from hubbub.evaluation.cluster import Replicas, nginx
from hubbub.evaluation.metrics import read_rttm
from hubbub.pacing import Pacer
from hubbub.protocol import SpeakersUpdate, TranscriptUpdate
from hubbub.settings import Settings
from hubbub.transcript import Segment
from hubbub.web.app import create_app

from support.servers import serve

CLIP = "synthetic/synthetic_conv_4spk"
SECONDS = 45.0
KILL_AT_S = 25.0  # inside "he was not an ill disposed young man" (23.9-26.8 s)
FRAME = 3200  # 0.1 s of 16 kHz int16


async def _stream(url: str, pcm: bytes, kill) -> tuple[str, list[TranscriptUpdate], dict, str]:
    """Stream at the pace of speech, killing at KILL_AT_S; the session, its updates, the
    speakers revised since, and how the stream ended."""
    client = TranscriberClient(url)
    stream = await client.open_resumable(resume_within_s=30)

    async def send() -> None:
        pacer = Pacer()
        killed = False
        for i in range(0, len(pcm), FRAME):
            at = i / (2 * SAMPLE_RATE)
            if at >= KILL_AT_S and not killed:
                killed = True
                await asyncio.to_thread(kill)
            await pacer.until(at)
            await stream.send_audio(pcm[i : i + FRAME])
        await stream.stop()

    sender = asyncio.create_task(send())
    updates: list[TranscriptUpdate] = []
    relabels: dict[str, str] = {}
    last = ""
    async for msg in stream:
        if isinstance(msg, TranscriptUpdate):
            updates.append(msg)
        elif isinstance(msg, SpeakersUpdate):
            relabels.update(msg.relabel)
        last = msg.type
    await sender
    await client.aclose()
    return stream.session_id, updates, relabels, last


def _voice(seg: Segment, turns) -> str:
    """The reference speaker a final overlaps most."""
    return max(turns, key=lambda t: min(seg.end, t.end) - max(seg.start, t.start)).speaker


def test_a_stream_goes_on_on_the_other_replica_when_its_replica_is_killed(postgres, speech_dir):
    audio = load_audio(speech_dir / f"{CLIP}.flac")[: int(SECONDS * SAMPLE_RATE)]
    turns = read_rttm(speech_dir / f"{CLIP}.rttm")["synthetic_conv_4spk"]
    with (
        Replicas(postgres.new_database(), 2) as replicas,
        nginx(replicas.ports) as lb,
        serve(create_app(Settings(transcriber_url=lb))) as web,
    ):
        killed: list[int] = []

        def kill() -> None:
            holders = replicas.holding()
            assert len(holders) == 1, f"one replica should hold the stream: {holders}"
            replicas.kill(holders[0])
            killed.append(holders[0])

        session, updates, relabels, last = asyncio.run(_stream(web, float_to_pcm16(audio), kill))
        survivor = f"http://127.0.0.1:{next(p for p in replicas.ports if p not in killed)}"
        info = httpx.get(f"{survivor}/v1/sessions/{session}").json()
        stored = info["transcript"]["segments"]

    assert last == "ended" and len(killed) == 1 and info["session"]["status"] == "ended"
    finals = [
        seg.model_copy(update={"speaker": relabels.get(seg.id, seg.speaker)})
        for u in updates
        for seg in u.finals
    ]
    ids = [seg.id for seg in finals]
    # Every final exactly once: none twice, none stored but not seen, no gaps in seq.
    assert len(ids) == len(set(ids)) and set(ids) == {s["id"] for s in stored}
    seqs = [u.seq for u in updates]
    # (A resume's catch-up carries the current seq: the same number may come twice.)
    assert all(0 <= b - a <= 1 for a, b in itertools.pairwise(seqs)), seqs
    assert [s["speaker"] for s in stored] == [seg.speaker for seg in finals]
    text = " ".join(seg.text for seg in finals).lower()
    for words in ("block books", "disposed young man", "antecedents", "typography"):
        assert words in text, f"{words!r} missing from {text!r}"
    # The same speakers: each voice heard both before and after the kill keeps its label.
    before = [s for s in finals if s.end <= KILL_AT_S - 2]
    after = [s for s in finals if s.end > KILL_AT_S + 0.5]  # from the other replica
    voices = ("LJ", "SS_reader")
    label = {
        part: {v: Counter(s.speaker for s in segs if _voice(s, turns) == v) for v in voices}
        for part, segs in (("before", before), ("after", after))
    }
    for voice in voices:
        assert label["before"][voice] and label["after"][voice], label
        assert (
            label["before"][voice].most_common(1)[0][0]
            == label["after"][voice].most_common(1)[0][0]
        ), label

"""Two transcriber replicas (real processes) on one PostgreSQL store, behind nginx, the web
app relaying through it: a stream whose replica is killed with SIGKILL mid-utterance goes
on on the other one, with every final once, its speakers' labels kept, and the utterance
it was in recovered."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import httpx
import sqlalchemy as sa

from hubbub.audio import SAMPLE_RATE, float_to_pcm16
from hubbub.client import TranscriberClient
from hubbub.decode import load_audio
from hubbub.evaluation.cluster import Replicas, nginx
from hubbub.evaluation.metrics import read_rttm
from hubbub.pacing import Pacer
from hubbub.protocol import SpeakersUpdate, TranscriptUpdate
from hubbub.settings import Settings
from hubbub.transcriber.app import create_app as transcriber_app
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
    # The utterance the kill cut, "he was not an ill-disposed young man", on both sides
    # of the cut (its "ill-disposed" is Whisper's to mishear: "old-sposed" was seen once
    # the words before the cut were final).
    for words in ("block books", "he was not", "young man", "antecedents", "typography"):
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


async def _move(a: str, b: str, pcm: bytes) -> dict:
    """Stream half of ``pcm`` to replica ``a``, then resume the session on replica ``b``
    while ``a``'s connection is still open (a client whose old path is half dead), send
    the rest there and stop."""
    half = len(pcm) // 2 // 2 * 2
    first = await TranscriberClient(a).open_stream()
    updates: list[TranscriptUpdate] = []
    await first.send_audio(pcm[:half])
    async for msg in first:
        if isinstance(msg, TranscriptUpdate):
            updates.append(msg)
            if msg.audio_processed_s >= half / (2 * SAMPLE_RATE) - 1.0:
                break
    second = await TranscriberClient(b).open_stream(first.resume_start())
    told = [msg async for msg in first]  # the old connection is told, and closed
    resume_from = round(second.ready.resume_from_s * SAMPLE_RATE) * 2
    await second.send_audio(pcm[resume_from:])
    await second.stop()
    later = [msg async for msg in second]
    return {
        "session": first.session_id,
        "told": told,
        "ready": second.ready,
        "updates": updates + [m for m in later if isinstance(m, TranscriptUpdate)],
        "last": later[-1].type,
    }


def test_a_resume_on_another_replica_takes_the_session_over(postgres, speech_dir):
    """No kill: the owner hands the session over when asked. It tells its connection
    ``taken_over`` and lets go; the other replica continues the session from its stored
    finals, on the same clock, and transcribes the utterance in progress whole."""
    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))
    with Replicas(postgres.new_database(), 2) as replicas:
        a, b = (f"http://127.0.0.1:{p}" for p in replicas.ports)
        got = asyncio.run(_move(a, b, pcm))
        info = httpx.get(f"{a}/v1/sessions/{got['session']}").json()
    assert [m.code for m in got["told"] if m.type == "error"] == ["taken_over"]
    assert got["ready"].resumed and got["ready"].session_id == got["session"]
    # It goes on from where the stored finals reach: the utterance in progress is sent again.
    assert 1.0 < got["ready"].resume_from_s < len(pcm) / 4 / SAMPLE_RATE
    assert got["last"] == "ended" and info["session"]["status"] == "ended"
    ids = [seg.id for u in got["updates"] for seg in u.finals]
    assert len(ids) == len(set(ids)) == info["session"]["segments"]
    text = " ".join(seg.text for u in got["updates"] for seg in u.finals).lower()
    text = "".join(ch for ch in text if ch.isalpha() or ch == " ")
    for words in ("fellow americans", "ask not what your country can do", "for your country"):
        assert words in text, text


def test_a_replica_whose_lease_was_taken_stops_and_writes_nothing(cpu_engine, speech_dir, tmp_path):
    """A replica that stalled past its lease finds another owner when it renews: its
    client is told ``taken_over`` and nothing more is stored from it."""
    db = tmp_path / "hubbub.db"
    settings = Settings(engine="cpu", database_url=str(db), replica_id="A", lease_s=1.0)
    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))

    async def main(url: str) -> tuple[str, list]:
        stream = await TranscriberClient(url).open_stream()
        await stream.send_audio(pcm[: len(pcm) // 2])
        engine = sa.create_engine(f"sqlite:///{db}")
        with engine.begin() as c:  # another replica took it over (its lease had lapsed)
            c.execute(sa.text("UPDATE sessions SET owner = 'B', lease_until = 1e12"))
        await stream.send_audio(pcm[len(pcm) // 2 :])

        async def until_closed() -> list:
            return [msg async for msg in stream]

        return stream.session_id, await asyncio.wait_for(until_closed(), 30)

    with serve(transcriber_app(settings, engine=cpu_engine)) as url:
        session, messages = asyncio.run(main(url))
        info = httpx.get(f"{url}/v1/sessions/{session}").json()["session"]
    assert [m.code for m in messages if m.type == "error"] == ["taken_over"]
    sent = sum(len(m.finals) for m in messages if isinstance(m, TranscriptUpdate))
    assert info["segments"] == sent and info["status"] == "live"  # B's to end, not A's

"""A live session: its scheduler stream, its numbering, its owner, its current socket.

A ``LiveSession`` outlives its connections. Its pump task turns engine deliveries into
numbered ``transcript`` messages, writing every final to the store before it is sent. A
connection that drops without ``stop`` parks the session for a grace period: it keeps
its speakers and clock but gives up its compute slot, finals keep being stored, and a
client that comes back with the session's id and resume token gets every final it
missed and carries on. When the grace period ends, the buffered audio is flushed into
finals, so a disconnect loses nothing that was sent.

Replicas sharing one store lease each live session to one of them (renewed by
``Service.keep_leases``). Asked for the session by another replica (its client resumed
there), a session stops at once and lets go (``hand_over``); one whose lease another
replica took stops writing (``lose``): two replicas never step one session.

Only the event loop touches a ``LiveSession``; the scheduler's worker owns the
``Stream`` behind it and is reached only through ``Scheduler`` methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Literal

from fastapi import WebSocket
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect, WebSocketState

from hubbub.audio import SAMPLE_RATE, PcmDecoder
from hubbub.engines.base import SessionOptions, UnsupportedOptions
from hubbub.protocol import (
    CLOSE_NORMAL,
    CLOSE_RESTART,
    Ended,
    ErrorMessage,
    SpeakersUpdate,
    Start,
    TranscriptUpdate,
    close_code,
)
from hubbub.security import Identity, token_ok
from hubbub.transcriber.scheduler import BufferFull, Delivery, Stream, threadsafe_queue_put
from hubbub.transcriber.store import LeaseLost
from hubbub.transcript import Segment

if TYPE_CHECKING:
    from hubbub.transcriber.service import Service

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 1.0  # an update at least this often while audio flows
STORE_PROGRESS_EVERY_S = 2.0  # settled audio is recorded when it moved this far

State = Literal["attached", "parked", "ending", "ended"]
EndReason = Literal["stop", "shutting_down", "disconnected", "moved", "error"]
STORED_STATUS: dict[EndReason, str] = {
    "stop": "ended",
    "shutting_down": "interrupted",
    "disconnected": "disconnected",
    "moved": "interrupted",  # handed to another replica, which marks it live again
    "error": "failed",
}


class SessionError(Exception):
    """Ends a connection with an ``error`` message and the close code for ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Arrivals:
    """When each stretch of audio arrived, to measure final latency (bounded)."""

    def __init__(self) -> None:
        self._marks: deque[tuple[float, float]] = deque(maxlen=4096)

    def mark(self, received_s: float) -> None:
        self._marks.append((received_s, time.monotonic()))

    def latency(self, audio_s: float) -> float | None:
        while len(self._marks) > 1 and self._marks[1][0] <= audio_s:
            self._marks.popleft()
        for received_s, at in self._marks:
            if received_s >= audio_s:
                return time.monotonic() - at
        return None


def _shift(seg: Segment, offset: float) -> Segment:
    if not offset:
        return seg
    words = [
        w.model_copy(update={"start": w.start + offset, "end": w.end + offset}) for w in seg.words
    ]
    return seg.model_copy(
        update={"start": seg.start + offset, "end": seg.end + offset, "words": words}
    )


async def close_with_error(ws: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.send_text(ErrorMessage(code=code, message=message).model_dump_json())
        await ws.close(close_code(code), reason=code)


class LiveSession:
    def __init__(
        self,
        svc: Service,
        session_id: str,
        start: Start,
        *,
        owner: Identity,
        client: str,
        token_hash: str,
        offset_s: float = 0.0,
        seq: int = 0,
        segment_base: int = 0,
        engine_state: str = "",
    ) -> None:
        self.svc = svc
        self.id = session_id
        self.start = start
        self.tenant = owner.tenant
        self.client = client  # whose per-client limit this session counts toward
        self.token_hash = token_hash
        # A session continued after its engine state was lost (a restart) runs on a new
        # engine clock that starts where its stored finals settled the audio.
        self.offset_s = offset_s
        self.seq = seq
        self.segment_base = segment_base
        self.restore_from = engine_state  # the engine's state this session continues from
        self.unsaved_state: str | None = None  # the engine's newest state, not stored yet
        self.lease_lost = False  # another replica owns the session now: write nothing
        self.cut_short = False  # stopped without a flush (hand_over, lose)
        self.decoder = PcmDecoder(start.sample_rate, start.channels)
        self.decoded_before_s = offset_s  # client audio decoded by earlier decoders
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.stream: Stream | None = None
        self.ws: WebSocket | None = None
        self.state: State = "attached"
        # Held while an update is numbered, stored and sent, and while a resuming client
        # is greeted: a greeting sees every update either in its catch-up or after it.
        self.lock = asyncio.Lock()
        self.arrivals = Arrivals()
        self.last_partials: list[Segment] = []
        self.last_sent = 0.0
        self.counted_s = 0.0
        self.reported_s = 0.0  # engine audio_processed_s of the last update sent
        self.committed_s = offset_s
        self.stored_committed_s = offset_s
        self.segments = 0
        self.end_flush: int | None = None  # the flush request whose delivery ends the session
        self.end_reason: EndReason = "stop"
        self.error: tuple[str, str] | None = None
        self.done = asyncio.Event()
        self.pump: asyncio.Task | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.closing_old: asyncio.Task | None = None  # a replaced socket being closed

    # -- lifecycle ----------------------------------------------------------------

    def open(self) -> None:
        """Take a compute slot (SchedulerFull when none) and start the pump."""
        loop = asyncio.get_running_loop()
        language = self.start.language or self.svc.settings.language
        options = SessionOptions(language=language, max_speakers=self.start.max_speakers)
        try:
            self.svc.engine.check(options)
        except UnsupportedOptions as exc:
            raise SessionError("unsupported_language", str(exc)) from exc
        self.stream = self.svc.scheduler.open(
            self.id,
            options,
            threadsafe_queue_put(loop, self.queue),
            realtime=self.start.realtime,
            segment_base=self.segment_base,
            state=self.restore_from,
        )
        self.pump = asyncio.create_task(self._pump(), name=f"pump-{self.id}")
        self.svc.metrics.sessions_active.inc()

    @property
    def received_s(self) -> float:
        """Audio received, as the engine sees it (16 kHz, after resampling)."""
        assert self.stream is not None
        return self.offset_s + self.svc.scheduler.received(self.stream) / SAMPLE_RATE

    @property
    def resume_from_s(self) -> float:
        """Where a resuming client continues: the client audio decoded so far."""
        return self.decoded_before_s + self.decoder.decoded_s

    def _reformat(self, start: Start) -> None:
        """A resuming client's audio format, and no half sample carried from before (the
        client resends from a sample boundary)."""
        assert self.stream is not None
        tail = self.decoder.flush()
        if len(tail):
            with contextlib.suppress(BufferFull):
                self.svc.scheduler.push(self.stream, tail)
        self.decoded_before_s += self.decoder.decoded_s
        self.decoder = PcmDecoder(start.sample_rate, start.channels)

    @property
    def attached(self) -> bool:
        ws = self.ws
        return (
            ws is not None
            and ws.client_state == WebSocketState.CONNECTED
            and ws.application_state == WebSocketState.CONNECTED
        )

    def owned_by(self, who: Identity, token: str | None) -> bool:
        return who.may_see(self.tenant) and token_ok(token, self.token_hash)

    def attach(self, ws: WebSocket, client: str, start: Start | None = None) -> None:
        """Serve ``ws`` from now on (a resume passes its ``start``); a socket that held
        the session is told it was taken over (and must not try to take it back)."""
        assert self.stream is not None
        if self.state == "parked":
            self.svc.scheduler.unpark(self.stream)  # SchedulerFull: stays parked
            self.state = "attached"
        if start is not None:
            self._reformat(start)
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        old, self.ws, self.client = self.ws, ws, client
        if old is not None and old is not ws:
            self.closing_old = asyncio.create_task(
                close_with_error(old, "taken_over", "another connection resumed this session")
            )

    def detach(self, ws: WebSocket) -> bool:
        """Forget ``ws`` if it is the session's socket; whether it was."""
        if self.ws is not ws:
            return False
        self.ws = None
        return True

    def park(self, grace_s: float) -> None:
        """The client vanished: keep everything for ``grace_s``, then flush and end."""
        assert self.stream is not None
        self.ws = None
        if self.state != "attached":
            return
        self.state = "parked"
        self.svc.scheduler.park(self.stream)
        self.expiry = asyncio.get_running_loop().call_later(grace_s, self.finish, "disconnected")

    def hand_over(self) -> None:
        """Another replica asked for the session (its client resumed there): tell the
        socket still here, and stop at once, leaving the session as stored. The audio not
        settled yet is not flushed into finals here: the client sends it again to the
        other replica, which transcribes the utterance in progress whole."""
        if self.state not in ("attached", "parked"):
            return
        old, self.ws = self.ws, None
        if old is not None:
            self.closing_old = asyncio.create_task(
                close_with_error(old, "taken_over", "the session was resumed on another replica")
            )
        self.end_reason = "moved"
        self._stop_now()

    def lose(self, message: str) -> None:
        """Another replica owns the session now (our lease lapsed): stop at once, writing
        nothing more; that replica has its audio from the client's replay."""
        if self.state == "ended":
            return
        self.lease_lost = True
        self.error = ("taken_over", message)
        self._stop_now()

    def _stop_now(self) -> None:
        self.state = "ending"
        self.cut_short = True
        if self.stream is not None:
            self.svc.scheduler.drop(self.stream)
        if self.pump is not None:
            self.pump.cancel()

    def finish(self, reason: EndReason) -> None:
        """Turn all audio received into finals, then end the session."""
        assert self.stream is not None
        if self.state in ("ending", "ended"):
            return
        self.state = "ending"
        self.end_reason = reason
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        tail = self.decoder.flush()
        if len(tail):
            with contextlib.suppress(BufferFull):
                self.svc.scheduler.push(self.stream, tail)
        self.end_flush = self.svc.scheduler.flush(self.stream)
        self.svc.scheduler.close(self.stream)

    # -- audio and control from the attached client -----------------------------------

    def audio(self, data: bytes) -> None:
        s = self.svc.settings
        assert self.stream is not None
        if len(data) > s.max_frame_bytes:
            raise SessionError(
                "frame_too_large", f"frame of {len(data)} bytes > {s.max_frame_bytes}"
            )
        samples = self.decoder.decode(data)
        if self.received_s + len(samples) / SAMPLE_RATE > s.max_session_s:
            raise SessionError(
                "session_too_long", f"sessions are limited to {s.max_session_s:.0f} s"
            )
        try:
            self.svc.scheduler.push(self.stream, samples)
        except BufferFull as exc:
            raise SessionError("buffer_full", f"{exc}: send audio in real time") from exc
        self.arrivals.mark(self.received_s - self.offset_s)

    def finalize(self) -> None:
        assert self.stream is not None
        self.svc.scheduler.flush(self.stream)

    # -- engine deliveries -> transcript messages ------------------------------------------

    async def send(self, message: BaseModel) -> None:
        """Send to the attached socket, if any (a lost message is resent as catch-up)."""
        if not self.attached:
            return
        assert self.ws is not None
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self.ws.send_text(message.model_dump_json())

    async def _pump(self) -> None:
        try:
            while True:
                d = await self.queue.get()
                if d.error is not None:
                    self.error = ("engine_error", d.error)
                    self.svc.metrics.errors.labels("engine_error").inc()
                    return
                async with self.lock:
                    await self._publish(d)
                if self.end_flush is not None and d.flushed_through >= self.end_flush:
                    return
        except LeaseLost as exc:
            self.lease_lost = True
            self.error = ("taken_over", str(exc))
        except asyncio.CancelledError:
            if not self.cut_short:
                raise
        except Exception as exc:  # a store that cannot write, say: end this session alone
            log.exception("session %s failed", self.id)
            self.error = ("internal_error", f"{exc.__class__.__name__}: {exc}")
        finally:
            await self._end()

    def catch_up(self, last_seq: int) -> list[BaseModel]:
        """What a resuming client missed after ``last_seq``: the finals it lacks (with
        their speakers now), and the new speakers of those it had (call holding ``lock``)."""
        store = self.svc.store
        missed = [seg for _, seg in store.finals_after(self.id, last_seq)]
        received = round(self.received_s, 3)
        update = TranscriptUpdate(
            seq=self.seq,
            finals=missed,
            partials=self.last_partials,
            audio_received_s=received,
            audio_processed_s=round(self.offset_s + self.reported_s, 3),
            audio_committed_s=round(self.stored_committed_s, 6),
            lag_s=0.0,
        )
        revised = store.relabels_after(self.id, last_seq)
        return [update, SpeakersUpdate(seq=self.seq, relabel=revised)] if revised else [update]

    async def _publish(self, d: Delivery) -> None:
        upd = d.update
        assert upd is not None
        now = time.monotonic()
        # A revision of this very update's finals goes out with them; earlier ones follow
        # in a ``speakers`` message.
        fresh = {s.id for s in upd.finals}
        finals = [
            _shift(s, self.offset_s).model_copy(
                update={"speaker": upd.relabel.get(s.id, s.speaker)}
            )
            for s in upd.finals
        ]
        revised = {sid: spk for sid, spk in upd.relabel.items() if sid not in fresh}
        partials = [_shift(s, self.offset_s) for s in upd.partials]
        committed = max(self.committed_s, self.offset_s + upd.committed_s)
        changed = partials != self.last_partials or bool(revised)
        # A drained buffer is always reported, so a client waiting on progress hears it.
        drained = d.buffered_s == 0 and upd.audio_processed_s > self.reported_s
        if not (
            finals
            or changed
            or drained
            or d.flushed_through
            or now - self.last_sent >= PROGRESS_EVERY_S
        ):
            return
        self.reported_s = upd.audio_processed_s
        self.committed_s = committed
        self.seq += 1
        processed = self.offset_s + upd.audio_processed_s
        received = self.received_s
        lag = max(0.0, received - processed)
        m = self.svc.metrics
        m.audio_seconds.inc(max(0.0, upd.audio_processed_s - self.counted_s))
        self.counted_s = upd.audio_processed_s
        m.lag_seconds.observe(lag)
        if upd.state is not None:
            self.unsaved_state = upd.state
        if finals:
            # Stored before it is sent: a final the client saw is always in the store, and
            # only while this replica owns the session.
            self.svc.store.add_finals(
                self.id,
                self.seq,
                finals,
                processed,
                committed,
                owner=self.svc.replica,
                engine_state=self.unsaved_state,
            )
            self.unsaved_state = None
            self.stored_committed_s = committed
            m.finals.inc(len(finals))
            for seg in upd.finals:
                latency = self.arrivals.latency(seg.end)
                if latency is not None:
                    m.final_latency.observe(latency)
            self.segments += len(finals)
        elif committed > self.stored_committed_s and (
            d.flushed_through or committed - self.stored_committed_s >= STORE_PROGRESS_EVERY_S
        ):
            self.svc.store.set_progress(self.id, self.seq, committed)
            self.stored_committed_s = committed
        if revised:
            self.svc.store.relabel(self.id, self.seq, revised)
        self.last_partials = partials
        self.last_sent = now
        await self.send(
            TranscriptUpdate(
                seq=self.seq,
                finals=finals,
                partials=partials,
                audio_received_s=round(received, 3),
                audio_processed_s=round(processed, 3),
                # Only what the store holds: a client may forget audio up to here.
                audio_committed_s=round(self.stored_committed_s, 6),
                lag_s=round(lag, 3),
            )
        )
        if revised:
            await self.send(SpeakersUpdate(seq=self.seq, relabel=revised))

    async def _end(self) -> None:
        """Bookkeeping that must happen however the session ends, then the goodbye."""
        try:
            if self.stream is not None:
                self.svc.scheduler.close(self.stream)
            if self.expiry is not None:
                self.expiry.cancel()
            self.state = "ended"
            self.svc.metrics.sessions_active.dec()
            self.svc.forget(self)
            reason: EndReason = "error" if self.error else self.end_reason
            if not self.lease_lost:
                self.svc.store.release(self.id, self.svc.replica, STORED_STATUS[reason])
            if self.attached:
                assert self.ws is not None
                await self._goodbye(self.ws)
        except Exception:
            log.exception("ending session %s", self.id)
        finally:
            self.done.set()

    async def _goodbye(self, ws: WebSocket) -> None:
        if self.error is not None:
            await close_with_error(ws, *self.error)
            return
        shutting_down = self.end_reason == "shutting_down"
        await self.send(
            Ended(
                session_id=self.id,
                seq=self.seq,
                audio_processed_s=round(self.received_s, 3),
                segments=self.segments,
                reason="shutting_down" if shutting_down else "stop",
            )
        )
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(CLOSE_RESTART if shutting_down else CLOSE_NORMAL)

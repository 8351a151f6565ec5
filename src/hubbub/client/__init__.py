"""The one protocol client: the web app's relay, ``hubbub stream``, load tests, your scripts.

One WebSocket per stream (protocol v1, docs/protocol.md), plus plain HTTP for health
and the session API. The URL may be a transcriber's or a web app's: each says where it
streams in ``/protocol.json``::

    client = TranscriberClient("http://127.0.0.1:8765", api_key=None)
    stream = await client.open_resumable(Start(type="start"))
    await stream.send_audio(pcm_s16le)          # any number of bytes
    await stream.stop()
    async for msg in stream:                    # TranscriptUpdate ... Ended
        ...
    await client.aclose()

``open_stream`` gives one connection (``TranscriberStream``). ``open_resumable`` gives a
``ResumingStream``, which survives a cut connection or a restarted server: it keeps the
audio the server has not settled yet (``audio_committed_s``), reconnects with the
session's id, resume token and last seq, and replays what the server no longer holds, so
every final arrives exactly once and the session's clock runs on.
"""

from hubbub.client.connection import (
    Health,
    TranscriberClient,
    TranscriberError,
    TranscriberStream,
    TranscriberUnavailable,
)
from hubbub.client.resuming import ReplayLog, ResumingStream

__all__ = [
    "Health",
    "ReplayLog",
    "ResumingStream",
    "TranscriberClient",
    "TranscriberError",
    "TranscriberStream",
    "TranscriberUnavailable",
]

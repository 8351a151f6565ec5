"""The library surface: ``hubbub.transcribe`` and friends, as the README shows them."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import hubbub
from hubbub.decode import load_audio
from hubbub.evaluation.metrics import wer


def test_transcribe_a_file_or_samples_with_one_engine(cpu_engine, speech_dir):
    path = speech_dir / "Picovoice-falcon/falcon_test.flac"
    t = hubbub.transcribe(path, engine=cpu_engine)
    assert isinstance(t, hubbub.Transcript) and t.duration > 18
    assert len(t.speakers) == 3 and all(isinstance(s, hubbub.Segment) for s in t.segments)
    assert "-->" in hubbub.export(t, "srt")
    jfk = speech_dir / "openai-whisper/jfk.flac"
    again = hubbub.transcribe(load_audio(jfk), engine=cpu_engine, max_speakers=1)
    assert wer((speech_dir / "openai-whisper/jfk.txt").read_text(), again.text).rate < 0.3


def test_the_client_is_there_for_a_running_service(transcriber_url, speech_dir):
    from hubbub.audio import float_to_pcm16

    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))

    async def main() -> list:
        client = hubbub.TranscriberClient(transcriber_url)
        stream = await client.open_resumable()
        await stream.send_audio(pcm)
        await stream.stop()
        msgs = [m async for m in stream]
        await client.aclose()
        return msgs

    msgs = asyncio.run(main())
    assert msgs[-1].type == "ended"
    assert "country" in " ".join(s.text for m in msgs if m.type == "transcript" for s in m.finals)


def test_importing_hubbub_loads_no_engine():
    code = "import sys, hubbub; print(hubbub.__version__, 'ctranslate2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [hubbub.__version__, "False"]

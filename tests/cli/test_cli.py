"""The real ``hubbub`` command, run as a user runs it: a subprocess, exit codes, files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hubbub.evaluation.metrics import wer
from hubbub.transcript import Transcript

_SCRIPT = Path(sys.executable).parent / "hubbub"
HUBBUB = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "hubbub"]
SR = 16_000


def hubbub(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HUBBUB, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert proc.stdout == ""


# -- bad input -------------------------------------------------------------------------


def _garbage(tmp: Path) -> Path:
    p = tmp / "garbage.wav"
    p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEthis is not audio at all" * 20)
    return p


def _random_bytes(tmp: Path) -> Path:
    # Probed as MP3 by libsndfile, whose decoder prints to stderr on its own.
    p = tmp / "noise.mp3"
    p.write_bytes(np.random.default_rng(1).bytes(100_000))
    return p


def _text(tmp: Path) -> Path:
    p = tmp / "notes.wav"
    p.write_text("minutes of the meeting\n" * 50)
    return p


def _empty(tmp: Path) -> Path:
    p = tmp / "empty.wav"
    p.write_bytes(b"")
    return p


def _directory(tmp: Path) -> Path:
    p = tmp / "recordings"
    p.mkdir()
    return p


def _missing(tmp: Path) -> Path:
    return tmp / "missing.wav"


def _zero_seconds(tmp: Path) -> Path:
    p = tmp / "zero.wav"
    sf.write(p, np.zeros(0, np.float32), SR, subtype="PCM_16")
    return p


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (_garbage, "not a readable audio file"),
        (_random_bytes, "noise.mp3"),
        (_text, "not a readable audio file"),
        (_empty, "empty"),
        (_directory, "directory"),
        (_missing, "no such file"),
        (_zero_seconds, "no audio"),
    ],
    ids=["garbage", "random-bytes", "text", "empty", "directory", "missing", "zero-seconds"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, make, needle: str) -> None:
    path = make(tmp_path)
    assert_one_line_error(hubbub("transcribe", path), str(path.name), needle)


def test_one_bad_file_among_good_ones_fails_before_work(tmp_path: Path, speech_dir: Path) -> None:
    good = speech_dir / "openai-whisper/jfk.flac"
    assert_one_line_error(hubbub("transcribe", good, _empty(tmp_path)), "empty")


def test_unwritable_out_and_unknown_format(tmp_path: Path, speech_dir: Path) -> None:
    clip = speech_dir / "openai-whisper/jfk.flac"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(hubbub("transcribe", clip, "--out", blocker / "sub"), "cannot write")
    assert_one_line_error(hubbub("transcribe", clip, "--format", "docx"), "unknown format")


def test_bad_manifests(tmp_path: Path) -> None:
    cases = {
        "dict.json": '{"entries": []}',
        "broken.json": "[{",
        "no-audio.json": '[{"id": "a", "category": "x", "audio": "gone.wav"}]',
        "no-id.json": '[{"audio": "gone.wav"}]',
    }
    for name, body in cases.items():
        (tmp_path / name).write_text(body)
        assert_one_line_error(hubbub("eval", tmp_path / name), name)
    assert_one_line_error(hubbub("eval", tmp_path / "absent.json"), "no such manifest")


# -- nothing to say --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["silence", "noise"])
def test_silence_and_noise_give_an_empty_transcript(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(3)
    n = 60 * SR
    audio = np.zeros(n, np.float32) if kind == "silence" else rng.standard_normal(n) * 0.05
    path = tmp_path / f"{kind}.wav"
    sf.write(path, audio.astype(np.float32), SR, subtype="PCM_16")
    proc = hubbub("transcribe", path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    t = Transcript.model_validate_json(proc.stdout)
    assert t.segments == [], t.text
    assert abs(t.duration - 60.0) < 0.01
    plain = hubbub("transcribe", path)
    assert plain.returncode == 0 and plain.stdout == "", plain.stdout


# -- real speech -----------------------------------------------------------------------

SRT_BLOCK = re.compile(
    r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)\n\[(S\d+)\] (.+)\n"
)


def _srt_seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def test_srt_files_with_speaker_tags(tmp_path: Path, speech_dir: Path) -> None:
    clip = speech_dir / "Picovoice-falcon/falcon_test.flac"  # 18.6 s, three speakers
    out = tmp_path / "subs"
    proc = hubbub("transcribe", clip, "--format", "srt", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    srt = (out / "falcon_test.srt").read_text(encoding="utf-8")
    blocks = srt.strip("\n").split("\n\n")
    parsed = [SRT_BLOCK.fullmatch(b + "\n") for b in blocks]
    assert all(parsed), srt
    prev_start = 0.0
    speakers = set()
    for k, m in enumerate(parsed, 1):
        assert m is not None
        assert int(m[1]) == k
        start, end = _srt_seconds(*m.groups()[1:5]), _srt_seconds(*m.groups()[5:9])
        assert prev_start <= start <= end <= 18.6 + 0.05
        prev_start = start
        speakers.add(m[10])
        assert m[11].strip()
    assert len(speakers) >= 2, srt


def test_json_output_validates_as_transcript(speech_dir: Path) -> None:
    clip = speech_dir / "openai-whisper/jfk.flac"
    proc = hubbub("transcribe", clip, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    t = Transcript.model_validate_json(proc.stdout)
    ref = (speech_dir / "openai-whisper/jfk.txt").read_text()
    assert wer(ref, t.text).rate <= 0.25, t.text
    assert t.speakers == ["S1"]
    assert all(s.words and s.id for s in t.segments)
    assert abs(t.duration - 11.0) < 0.05


def test_python_dash_m_runs_the_same_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hubbub", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("transcribe", "eval", "bench"):
        assert command in proc.stdout


# -- eval ------------------------------------------------------------------------------

EVAL_IDS = ["openai-whisper/jfk", "KoljaB-RealtimeSTT/LJ001-0004", "Picovoice-falcon/falcon_test"]


def test_eval_prints_a_table_and_writes_json(
    tmp_path: Path, speech_dir: Path, manifest: list[dict]
) -> None:
    entries = []
    for e in manifest:
        if e["id"] not in EVAL_IDS:
            continue
        entry = dict(e)
        for key in ("audio", "ref_text", "ref_rttm", "ref_stm"):
            if e.get(key):
                dst = tmp_path / "data" / e[key]
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(speech_dir / e[key], dst)
                entry[key] = f"data/{e[key]}"
        entries.append(entry)
    assert len(entries) == len(EVAL_IDS)
    small = tmp_path / "manifest.json"
    small.write_text(json.dumps(entries))
    results = tmp_path / "results.json"

    proc = hubbub("eval", small, "--json", results)
    assert proc.returncode == 0, proc.stderr
    assert "hubbub eval" in proc.stdout and "WER" in proc.stdout and "DER" in proc.stdout
    for cat in ("wer_single", "diar_multi_rttm_only", "all"):
        assert cat in proc.stdout

    data = json.loads(results.read_text())
    summary, files = data["summary"], data["files"]
    # the single-speaker clips alternate between a tuning and a test half
    assert set(summary) == {
        "wer_single",
        "wer_single/tune",
        "wer_single/test",
        "diar_multi_rttm_only",
        "all",
    }
    assert summary["wer_single/tune"]["files"] == summary["wer_single/test"]["files"] == 1
    for row in summary.values():
        assert {"files", "wer", "der", "cpwer", "speaker_count_exact"} <= set(row)
    assert summary["all"]["files"] == 3
    assert summary["wer_single"]["wer"] is not None and summary["wer_single"]["wer"] <= 0.25
    diar = summary["diar_multi_rttm_only"]
    assert diar["der"] is not None
    # where the DER comes from: its three parts add up to it
    assert sum(diar["der_parts"].values()) == pytest.approx(diar["der"], abs=2e-4)
    assert summary["wer_single"]["der_parts"] is None
    # the Picovoice clip's speakers never talk at once: nothing is out of reach
    assert diar["overlap_floor"] == 0.0
    assert summary["wer_single"]["overlap_floor"] is None
    by_id = {f["id"]: f for f in files}
    assert set(by_id) == set(EVAL_IDS)
    for f in files:
        assert {"wer", "der", "hyp_speakers", "ref_speakers", "text"} <= set(f)
    assert by_id["Picovoice-falcon/falcon_test"]["der"] <= 0.3
    assert by_id["openai-whisper/jfk"]["der"] is None  # no reference turns

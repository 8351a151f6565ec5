import json
import re

import pytest

from hubbub.transcript import (
    CUE_MAX_CHARS,
    CUE_MAX_S,
    LINE_MAX_S,
    Segment,
    Transcript,
    Word,
    export,
    to_srt,
    to_vtt,
)


def _transcript() -> Transcript:
    return Transcript(
        session_id="meet",
        duration=65.0,
        segments=[
            Segment(
                id="meet-1",
                speaker="S1",
                start=0.5,
                end=2.25,
                text="Hello there.",
                words=[
                    Word(text=" Hello", start=0.5, end=1.0),
                    Word(text=" there.", start=1.1, end=2.25),
                ],
            ),
            Segment(id="meet-2", speaker="S2", start=61.2, end=64.004, text="Hi, how are you?"),
            Segment(id="meet-3", speaker="S2", start=64.1, end=64.2, text="  "),
        ],
    )


def _parse_cues(text: str, sep: str) -> list[tuple[float, float, str]]:
    pat = re.compile(
        rf"(\d\d):(\d\d):(\d\d){sep}(\d\d\d) --> (\d\d):(\d\d):(\d\d){sep}(\d\d\d)\n(.+)"
    )
    cues = []
    for m in pat.finditer(text):
        g = [int(x) for x in m.groups()[:8]]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        cues.append((start, end, m.group(9)))
    return cues


def test_srt_parses_back_with_times_and_speakers():
    srt = to_srt(_transcript())
    assert srt.startswith("1\n")
    cues = _parse_cues(srt, ",")
    assert cues == [(0.5, 2.25, "[S1] Hello there."), (61.2, 64.004, "[S2] Hi, how are you?")]


def test_vtt_parses_back_with_voice_spans():
    vtt = to_vtt(_transcript())
    assert vtt.startswith("WEBVTT\n\n")
    cues = _parse_cues(vtt, r"\.")
    assert cues == [(0.5, 2.25, "<v S1>Hello there."), (61.2, 64.004, "<v S2>Hi, how are you?")]


def test_txt_json_rttm():
    t = _transcript()
    assert export(t, "txt").splitlines() == [
        "[00:00:00.500] S1: Hello there.",
        "[00:01:01.200] S2: Hi, how are you?",
    ]
    back = Transcript.model_validate(json.loads(export(t, "json")))
    assert back == t
    rttm = export(t, "rttm").splitlines()
    assert rttm[0].split() == [
        "SPEAKER",
        "meet",
        "1",
        "0.500",
        "1.750",
        "<NA>",
        "<NA>",
        "S1",
        "<NA>",
        "<NA>",
    ]
    assert len(rttm) == 3


def test_exports_show_speaker_names_and_json_keeps_labels():
    t = _transcript().model_copy(update={"speaker_names": {"S2": "Mary Ann"}})
    assert export(t, "txt").splitlines()[1] == "[00:01:01.200] Mary Ann: Hi, how are you?"
    assert _parse_cues(to_srt(t), ",")[0][2] == "[S1] Hello there."  # unnamed: its label
    assert _parse_cues(to_srt(t), ",")[1][2] == "[Mary Ann] Hi, how are you?"
    assert _parse_cues(to_vtt(t), r"\.")[1][2] == "<v Mary Ann>Hi, how are you?"
    assert export(t, "rttm").splitlines()[1].split()[7] == "Mary_Ann"  # one RTTM field
    back = json.loads(export(t, "json"))
    assert back["speaker_names"] == {"S2": "Mary Ann"}
    assert [s["speaker"] for s in back["segments"]] == ["S1", "S2", "S2"]


def test_speakers_and_text():
    t = _transcript()
    assert t.speakers == ["S1", "S2"]
    assert t.by_speaker()["S1"] == "Hello there."


def test_names_and_text_cannot_break_subtitle_cues():
    """A speaker named with an arrow, markup or an ampersand stays inside its cue."""
    t = _transcript().model_copy(
        update={"speaker_names": {"S1": "A --> B <b>&", "S2": "Tom & <Jerry>"}}
    )
    srt = to_srt(t)
    assert _parse_cues(srt, ",") == [
        (0.5, 2.25, "[A → B ‹b›&] Hello there."),
        (61.2, 64.004, "[Tom & ‹Jerry›] Hi, how are you?"),
    ]
    assert srt.count("-->") == 2, "only the timing lines hold an arrow"
    vtt = to_vtt(t)
    assert _parse_cues(vtt, r"\.") == [
        (0.5, 2.25, "<v A --&gt; B &lt;b&gt;&amp;>Hello there."),
        (61.2, 64.004, "<v Tom &amp; &lt;Jerry&gt;>Hi, how are you?"),
    ]
    assert vtt.count("-->") == 2


def _pieces(speaker: str, start: float, texts: list[str], gap: float = 0.1) -> list[Segment]:
    """One utterance given out as several finals, each word 0.4 s long."""
    out, t = [], start
    for text in texts:
        n = len(text.split())
        out.append(Segment(id=f"x-{t}", speaker=speaker, start=t, end=t + 0.4 * n, text=text))
        t += 0.4 * n + gap
    return out


def test_one_speakers_consecutive_finals_read_as_one_line_and_cue():
    segs = (
        _pieces("S1", 0.0, ["And so my", "fellow Americans,", "ask not"])
        + _pieces("S2", 5.0, ["what your", "country can do"])
        + _pieces("S2", 12.0, ["for you."])  # after a long pause: a new turn
    )
    t = Transcript(session_id="m", segments=segs)
    assert export(t, "txt").splitlines() == [
        "[00:00:00.000] S1: And so my fellow Americans, ask not",
        "[00:00:05.000] S2: what your country can do",
        "[00:00:12.000] S2: for you.",
    ]
    cues = _parse_cues(to_srt(t), ",")
    assert [c[2] for c in cues] == [
        "[S1] And so my fellow Americans, ask not",
        "[S2] what your country can do",
        "[S2] for you.",
    ]
    assert cues[0][:2] == (0.0, pytest.approx(segs[2].end))
    vtt = _parse_cues(to_vtt(t), r"\.")
    assert vtt[0][2] == "<v S1>And so my fellow Americans, ask not"
    # JSON keeps the finals as given; RTTM keeps their exact times
    assert len(Transcript.model_validate_json(export(t, "json")).segments) == 6
    assert len(export(t, "rttm").splitlines()) == 6


def test_a_long_turn_becomes_cues_a_reader_can_follow():
    words = [f"word{i}" for i in range(90)]
    segs = _pieces("S1", 0.0, [" ".join(words[i : i + 3]) for i in range(0, 90, 3)])
    t = Transcript(segments=segs)
    cues = _parse_cues(to_srt(t), ",")
    assert len(cues) > 3
    assert all(
        end - start <= CUE_MAX_S and len(text) <= CUE_MAX_CHARS + 5 for start, end, text in cues
    )
    # nothing lost, nothing doubled
    said = " ".join(text.removeprefix("[S1] ") for *_, text in cues)
    assert said.split() == words
    lines = export(t, "txt").splitlines()
    assert segs[-1].end > LINE_MAX_S and len(lines) == 2

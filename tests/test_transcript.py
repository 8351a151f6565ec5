import json
import re

from hubbub.transcript import Segment, Transcript, Word, export, to_srt, to_vtt


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

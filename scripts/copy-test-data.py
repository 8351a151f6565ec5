"""Copy the recorded clips the tests need from shared/data into tests/data, as FLAC.

Run from the repository root: ``python scripts/copy-test-data.py ../shared/data``. The
tests read only tests/data (``HUBBUB_SPEECH_DATA`` overrides it); ``hubbub eval`` and the
benchmarks read the full shared set. Sources and licences go into tests/data/README.md.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import soundfile as sf

CATEGORIES = {"wer_single"}
EXTRA = {"Picovoice-falcon/falcon_test", "synthetic/synthetic_conv_4spk"}
REGRESSIONS = ["lost_turn.16k.wav"]


def flac(src: Path, dst: Path) -> None:
    audio, rate = sf.read(src, dtype="int16")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, audio, rate, format="FLAC", subtype="PCM_16")


def main(shared: Path) -> None:
    out = Path("tests/data")
    speech = shared / "speech"
    entries = []
    for e in json.loads((speech / "manifest.json").read_text()):
        if e["category"] not in CATEGORIES and e["id"] not in EXTRA:
            continue
        e = dict(e)
        audio = Path(e["audio"]).with_suffix("").with_suffix(".flac")
        flac(speech / e["audio"], out / "speech" / audio)
        e["audio"] = str(audio)
        for key in ("ref_text", "ref_rttm", "ref_stm"):
            if e.get(key):
                shutil.copy(speech / e[key], out / "speech" / e[key])
        entries.append(e)
    (out / "speech" / "manifest.json").write_text(json.dumps(entries, indent=1) + "\n")
    for name in REGRESSIONS:
        flac(shared / "regressions" / name, out / "regressions" / name.replace(".wav", ".flac"))
    shutil.copy(shared / "regressions" / "README.md", out / "regressions" / "README.md")
    rows = []
    for e in entries:
        src = e["source"]
        commit = (src.get("commit") or "built here")[:10]
        rows.append(
            f"| `{e['id']}` | {e['category']} | {e['duration_s']} s | {src['repo']} "
            f"`{src['path']}` @ {commit} | {src['license']} |"
        )
    readme = (out / "README.md").read_text().split("<!-- clips -->")[0]
    table = "| clip | category | length | source | licence |\n|---|---|---|---|---|\n"
    (out / "README.md").write_text(readme + "<!-- clips -->\n" + table + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))

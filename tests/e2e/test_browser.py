"""The page in a real browser: Debian's Chromium driven by Playwright, a WAV file as the
microphone, the web app relaying to the real transcriber (CPU engine).

Screenshots land in artifacts/ (gitignored). Needs ``chromium`` and ``playwright``
(scripts/setup-dev.sh installs both); set HUBBUB_SKIP_BROWSER=1 to skip on purpose.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from hubbub.evaluation.cluster import spawn
from hubbub.settings import Settings
from hubbub.web.app import create_app

from support.fake_transcriber import FakeTranscriber
from support.servers import free_port, serve

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = os.environ.get("HUBBUB_CHROMIUM", "/usr/bin/chromium")
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if os.environ.get("HUBBUB_SKIP_BROWSER"):
    pytest.skip("HUBBUB_SKIP_BROWSER is set", allow_module_level=True)
if not shutil.which(CHROMIUM):
    pytest.fail(f"{CHROMIUM} missing: run scripts/setup-dev.sh", pytrace=False)
sync_api = pytest.importorskip("playwright.sync_api", reason="run scripts/setup-dev.sh")


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def conversation(speech_dir, tmp_path_factory) -> Path:
    """The 4-speaker conversation as a WAV file: what Chromium's fake microphone plays."""
    audio, sr = sf.read(speech_dir / "synthetic" / "synthetic_conv_4spk.flac", dtype="int16")
    wav = tmp_path_factory.mktemp("mic") / "conversation.wav"
    sf.write(wav, audio, sr, subtype="PCM_16")
    return wav


def launch(playwright, mic_wav: Path | None = None, grant_mic: bool = True):
    args = list(BASE_ARGS)
    if mic_wav is not None:
        args += [
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic_wav}",
        ]
    if grant_mic:
        args.append("--use-fake-ui-for-media-stream")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args)


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 820}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("() => window.hubbub !== undefined")
    return page, errors


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def state(page) -> str:
    return page.evaluate("() => window.hubbub.conn.state")


def test_worklet_resamples_to_16k_without_aliasing(playwright):
    """The capture worklet on a 48 kHz / 44.1 kHz context: right rate, pitch and level,
    and a 12 kHz tone (above 16 kHz's Nyquist) does not fold back into the speech band."""
    render = """async ([rate, freq]) => {
        const ctx = new OfflineAudioContext(1, rate * 2, rate);
        await ctx.audioWorklet.addModule("audio-worklet.js");
        const osc = new OscillatorNode(ctx, {frequency: freq});
        const gain = new GainNode(ctx, {gain: 0.5});
        const node = new AudioWorkletNode(ctx, "pcm-capture",
            {processorOptions: {targetRate: 16000, frameMs: 100}});
        const frames = [];
        node.port.onmessage = (e) => frames.push(...new Int16Array(e.data.pcm));
        osc.connect(gain).connect(node).connect(ctx.destination);
        osc.start();
        await ctx.startRendering();
        await new Promise((r) => setTimeout(r, 300));
        return frames;
    }"""
    with serve(create_app(Settings(transcriber_url="http://127.0.0.1:9"))) as url:
        browser = launch(playwright)
        page, errors = open_page(browser, url)
        for rate, freq, expect_rms in [(48000, 440, 0.5), (44100, 3000, 0.5), (48000, 12000, 0)]:
            pcm = np.array(page.evaluate(render, [rate, freq]), dtype=np.float32) / 32768
            # 2 s at 16 kHz in whole 100 ms frames, less the resampler's lookahead.
            assert len(pcm) % 1600 == 0 and 30400 <= len(pcm) <= 32000, (rate, len(pcm))
            steady = pcm[1600:-1600]
            rms = float(np.sqrt(np.mean(steady**2)))
            if expect_rms:
                assert rms == pytest.approx(expect_rms / np.sqrt(2), rel=0.03), (rate, freq)
                spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
                peak_hz = np.argmax(spectrum) * 16000 / len(steady)
                assert peak_hz == pytest.approx(freq, abs=3)
            else:
                assert rms < 0.5 / np.sqrt(2) / 100, "aliasing above -40 dB"
        browser.close()
    assert errors == []


@pytest.mark.slow
def test_live_page_shows_who_said_what(playwright, transcriber_url, conversation):
    """Start with a fake microphone playing a 4-voice conversation: the page shows words
    and speaker labels live, partials differently, renames speakers, stops and exports."""
    with serve(create_app(Settings(transcriber_url=transcriber_url))) as url:
        browser = launch(playwright, conversation)
        page, errors = open_page(browser, url)
        shot(page, "web-empty.png")
        page.click("#start")
        page.wait_for_function("() => window.hubbub.conn.state === 'live'", timeout=30_000)

        # Partial text shows first, grey and italic, then settles into finals.
        partial = page.wait_for_selector(".seg.partial", timeout=30_000)
        assert partial.evaluate("e => getComputedStyle(e).fontStyle") == "italic"
        final = page.query_selector(".seg:not(.partial)")
        if final is not None:
            assert final.evaluate("e => getComputedStyle(e).fontStyle") == "normal"

        # Words turn final while their speaker goes on: the final words and the grey tail
        # share one line.
        page.wait_for_function(
            """() => [...document.querySelectorAll('.turn .text')].some(p =>
                       p.querySelector('.seg.partial') && p.querySelector('.seg:not(.partial)'))""",
            timeout=60_000,
        )

        page.wait_for_function(
            """() => new Set([...document.querySelectorAll('.turn:not(.live) .spk')]
                       .map(b => b.dataset.speaker)).size >= 2""",
            timeout=60_000,
        )
        text = page.inner_text("#transcript").lower()
        assert any(w in text for w in ("modern", "dashwood", "consider", "prudently")), text
        assert page.is_visible("#lag") and page.inner_text("#lag").startswith("lag ")
        shot(page, "web-live.png")

        # Rename the first speaker: every label for it changes, and exports use the name.
        page.click(".turn .spk >> nth=0")
        page.fill(".spk-edit", "Alice")
        page.keyboard.press("Enter")
        assert page.locator(".spk", has_text="Alice").count() >= 2  # transcript + sidebar

        page.click("#stop")
        page.wait_for_function("() => window.hubbub.conn.state === 'ended'", timeout=60_000)
        sid = page.evaluate("() => window.hubbub.conn.sessionId")
        page.wait_for_selector(f"#sessions li[data-id='{sid}']")
        with page.expect_download() as dl:
            page.click(".exports [data-format=srt]")
        srt = Path(dl.value.path()).read_text()
        assert "-->" in srt and "[Alice]" in srt
        shot(page, "web-ended.png")

        # The name is the session's, not this tab's: a fresh page opening it shows it.
        other, other_errors = open_page(browser, url)
        other.click(f"#sessions li[data-id='{sid}'] .open")
        other.wait_for_selector("#transcript .spk")
        assert other.locator("#transcript .spk", has_text="Alice").count() >= 1
        assert other_errors == []
        browser.close()
    assert errors == []


@pytest.mark.slow
def test_upload_streams_a_file_faster_than_real_time(playwright, transcriber_url, speech_dir):
    audio, sr = sf.read(speech_dir / "synthetic" / "synthetic_conv_4spk.flac", dtype="float32")
    clip = ARTIFACTS / "upload-clip.wav"
    ARTIFACTS.mkdir(exist_ok=True)
    sf.write(clip, np.stack([audio[: 24 * sr]] * 2, axis=1), sr)  # stereo: downmixed in page
    with serve(create_app(Settings(transcriber_url=transcriber_url))) as url:
        browser = launch(playwright)
        page, errors = open_page(browser, url)
        t0 = time.monotonic()
        page.set_input_files("#file", str(clip))
        page.wait_for_selector("#notice[data-kind=info] >> text=transcribed", timeout=90_000)
        took = time.monotonic() - t0
        shot(page, "web-upload.png")
        speakers = page.evaluate(
            """() => new Set([...document.querySelectorAll('.turn .spk')]
                       .map(b => b.dataset.speaker)).size"""
        )
        text = page.inner_text("#transcript").lower()
        browser.close()
    # The pace is the engine's (and this machine's); the page never holds it back.
    print(f"upload: 24 s of audio transcribed through the page in {took:.1f} s")
    assert speakers >= 2 and "dashwood" in text
    assert errors == []


def test_upload_is_chunked_paced_and_never_stalls(playwright, tmp_path):
    """Against a stand-in that answers at once: 30 s of audio go in 0.5 s chunks, far
    faster than real time; against one that goes quiet, the upload still finishes."""
    rng = np.random.default_rng(0)
    long_wav, short_wav = tmp_path / "long.wav", tmp_path / "short.wav"
    sf.write(long_wav, rng.uniform(-0.1, 0.1, 30 * 16000).astype(np.float32), 16000)
    sf.write(short_wav, rng.uniform(-0.1, 0.1, 4 * 44100).astype(np.float32), 44100)
    browser = launch(playwright)
    with (
        FakeTranscriber().running() as fake,
        serve(create_app(Settings(transcriber_url=fake.url))) as url,
    ):
        page, errors = open_page(browser, url)
        t0 = time.monotonic()
        page.set_input_files("#file", str(long_wav))
        page.wait_for_selector("#notice >> text=long.wav transcribed", timeout=30_000)
        took = time.monotonic() - t0
        assert len(fake.audio["fake1"]) == 30 * 16000 * 2
        assert fake.controls == [{"type": "stop"}]
        assert took < 6, f"30 s of audio took {took:.1f} s"

        fake.mode = "quiet"
        page.set_input_files("#file", str(short_wav))  # 44.1 kHz: resampled in page
        page.wait_for_selector("#notice >> text=short.wav transcribed", timeout=30_000)
        assert len(fake.audio["fake2"]) == 4 * 16000 * 2
    browser.close()
    assert errors == []


def test_clear_messages_when_things_go_wrong(playwright, conversation):
    """Denied microphone, unreachable transcriber, full server, and a dropped upstream
    that the relay resumes by session id + last seq without the page noticing."""
    nowhere = Settings(transcriber_url=f"http://127.0.0.1:{free_port()}")
    with serve(create_app(nowhere)) as url:
        browser = launch(playwright, conversation, grant_mic=False)
        page, _ = open_page(browser, url)
        page.click("#start")
        page.wait_for_selector("#notice[data-kind=error] >> text=denied")
        shot(page, "web-mic-denied.png")
        page.click("#connect")
        page.wait_for_selector("#notice >> text=cannot be reached")
        assert "Retrying" in page.inner_text("#notice")
        browser.close()

    browser = launch(playwright, conversation)
    with FakeTranscriber().running() as fake:
        fake.mode = "full"
        with serve(create_app(Settings(transcriber_url=fake.url))) as url:
            page, errors = open_page(browser, url)
            page.click("#connect")
            page.wait_for_selector("#notice >> text=busy")
            assert "Retrying in 5 s" in page.inner_text("#notice")
            shot(page, "web-server-full.png")
            page.click("#stop")
            assert state(page) == "idle"

            fake.mode = "drop"
            page.click("#start")
            page.wait_for_function(
                "() => window.hubbub.conn.state === 'live' && window.hubbub.conn.lastSeq >= 2",
                timeout=15_000,
            )
            first, resume = fake.starts[-2:]
            assert "session_id" not in first
            assert resume["session_id"] == "fake1" and resume["last_seq"] >= 1
            assert "Reconnected" not in page.inner_text("#notice")
            page.click("#stop")
            page.wait_for_function("() => window.hubbub.conn.state === 'ended'")
    browser.close()
    assert errors == []


@pytest.mark.slow
def test_page_resumes_its_session_after_a_dropped_connection(
    playwright, transcriber_url, conversation
):
    """The browser's socket drops mid-speech: the page reconnects with session_id +
    last_seq, the transcriber resumes the same session, and nothing shows twice."""
    with serve(create_app(Settings(transcriber_url=transcriber_url))) as url:
        browser = launch(playwright, conversation)
        page, errors = open_page(browser, url)
        page.click("#start")
        # A final of a few words: a one-word early final ("in") is in many others' text.
        phrase = "window.hubbub.view.finals.find((f) => f.text.trim().split(/\\s+/).length >= 3)"
        page.wait_for_function(f"() => {phrase} !== undefined", timeout=60_000)
        sid = page.evaluate("() => window.hubbub.conn.sessionId")
        first = page.evaluate(f"() => {phrase}.text.trim()")
        page.evaluate("() => window.hubbub.conn.ws.close(4000, 'test: drop')")
        page.wait_for_selector("#notice >> text=Reconnected", timeout=15_000)
        assert page.evaluate("() => window.hubbub.conn.sessionId") == sid
        assert state(page) == "live"
        n = page.evaluate("() => window.hubbub.view.finals.length")
        page.wait_for_function(f"() => window.hubbub.view.finals.length > {n}", timeout=60_000)
        shot(page, "web-resumed.png")
        assert page.inner_text("#transcript").count(first) == 1
        ids = page.eval_on_selector_all("#transcript .seg", "(els) => els.map((e) => e.dataset.id)")
        assert len(ids) == len(set(ids)), "a final shown twice"
        page.click("#stop")
        page.wait_for_function("() => window.hubbub.conn.state === 'ended'", timeout=60_000)
        page.wait_for_selector(f"#sessions li[data-id='{sid}']")
        assert page.locator("#sessions li").count() >= 1
        browser.close()
    assert errors == []


def test_page_with_an_api_key(playwright, conversation):
    """Opened as /?token=KEY the page streams and lists sessions; without it, it says why."""
    browser = launch(playwright, conversation)
    with (
        FakeTranscriber().running() as fake,
        serve(create_app(Settings(transcriber_url=fake.url, api_key="k3y"))) as url,
    ):
        page, errors = open_page(browser, url)
        page.wait_for_selector("#sessions >> text=need an access key")
        page.click("#connect")
        page.wait_for_selector("#notice[data-kind=error] >> text=needs an access key")
        assert state(page) == "failed"

        page = browser.new_page()
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        page.on("websocket", lambda ws: asked.append(ws.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/?token=k3y")
        page.wait_for_function("() => window.hubbub !== undefined")
        assert "k3y" not in page.url, "the key leaves the address bar (history, Referer)"
        assert page.evaluate("() => document.cookie") == "", "and the page cannot read it"
        page.wait_for_selector("#sessions li[data-id=fake1]")
        page.click("#start")
        page.wait_for_function("() => window.hubbub.view.finals.length >= 2", timeout=15_000)
        page.click("#stop")
        page.wait_for_function("() => window.hubbub.conn.state === 'ended'")
        assert fake.headers[-1]["authorization"] == "Bearer k3y"
        assert [u for u in asked[1:] if "k3y" in u] == [], "no request the page makes has it"
    browser.close()
    assert errors == []


@pytest.mark.slow
def test_page_loses_and_repeats_nothing_across_kill_9_and_restart(
    playwright, conversation, tmp_path
):
    """The transcriber is killed (kill -9) mid-speech and started again. The page says it
    is reconnecting, holds the microphone's audio, resumes the same session, and ends with
    every final shown once, the same as stored, the speech at the kill included."""
    port = free_port()
    env = {
        "HUBBUB_ENGINE": "cpu",
        "HUBBUB_DATA_DIR": str(tmp_path),
        "HUBBUB_PORT": str(port),
        "HUBBUB_TRUSTED_PROXIES": '["127.0.0.1"]',
    }
    transcriber = f"http://127.0.0.1:{port}"
    with (
        spawn(["transcriber"], env, transcriber + "/health") as proc,
        serve(create_app(Settings(transcriber_url=transcriber))) as url,
    ):
        browser = launch(playwright, conversation)
        page, errors = open_page(browser, url)
        page.click("#start")
        page.wait_for_function("() => window.hubbub.view.finals.length >= 2", timeout=60_000)
        sid = page.evaluate("() => window.hubbub.conn.sessionId")
        proc.kill()
        proc.wait(timeout=10)
        killed_at = page.evaluate("() => window.hubbub.conn.log.pos / 32000")
        page.wait_for_function("() => window.hubbub.conn.state === 'reconnecting'", timeout=15_000)
        shot(page, "web-transcriber-killed.png")
        time.sleep(2)  # the microphone goes on; the page holds what it captures
        with spawn(["transcriber"], env, transcriber + "/health"):
            page.wait_for_function("() => window.hubbub.conn.state === 'live'", timeout=60_000)
            page.wait_for_function(
                f"() => window.hubbub.view.finals.some(s => s.start > {killed_at + 3})",
                timeout=90_000,
            )
            page.click("#stop")
            page.wait_for_function("() => window.hubbub.conn.state === 'ended'", timeout=90_000)
            shown = page.evaluate(
                "() => window.hubbub.view.finals.map(s => [s.id, s.start, s.end])"
            )
            stored = httpx.get(f"{transcriber}/v1/sessions/{sid}").json()["transcript"]
        browser.close()
    ids = [s[0] for s in shown]
    assert len(ids) == len(set(ids)), "nothing shown twice"
    assert sorted(ids) == sorted(s["id"] for s in stored["segments"]), "shown == stored"
    # Speech at the kill was transcribed from the audio the page kept: a final reaches
    # across (or right up to) that moment, on the one clock.
    assert any(start - 1.5 <= killed_at <= end + 1.5 for _, start, end in shown), (
        killed_at,
        shown,
    )
    assert errors == []


def test_revised_speakers_recolour_the_transcript(playwright, conversation):
    """A ``speakers`` message moves a final shown under Speaker 1 to Speaker 3: its text
    stays, its turn takes Speaker 3's name and colour, and a name given to Speaker 3
    follows it."""
    browser = launch(playwright, conversation)
    with (
        FakeTranscriber().running() as fake,
        serve(create_app(Settings(transcriber_url=fake.url))) as url,
    ):
        fake.mode = "relabel"
        page, errors = open_page(browser, url)
        page.click("#start")
        page.wait_for_function("() => window.hubbub.view.finals.length >= 4", timeout=15_000)
        moved = page.locator("#transcript .seg[data-id='fake1-1']")
        assert moved.inner_text() == "chunk 1"
        turn = moved.locator("xpath=ancestor::article[1]")
        assert turn.locator(".spk").get_attribute("data-speaker") == "S3"
        assert page.evaluate("() => window.hubbub.view.finals[0].speaker") == "S3"
        page.click("#speakers .spk[data-speaker=S3]")
        page.fill(".spk-edit", "Carol")
        page.keyboard.press("Enter")
        assert turn.locator(".spk").inner_text() == "Carol"
        page.click("#stop")
        page.wait_for_function("() => window.hubbub.conn.state === 'ended'")
    browser.close()
    assert errors == []

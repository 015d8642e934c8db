"""Voice messages (``veil.client.voice``), checked on real speech.

espeak-ng speaks test sentences to WAV files; sox, an independent implementation, says how long
they are and how loud each segment is, converts them to other formats and pads them with silence.
Both are installed with apt-get once per session if missing; the tests that need them are skipped
(with the reason) if that is impossible. Hostile input is checked to end in :class:`VoiceError`
and nothing else, including in a subprocess that survives a crash of FFmpeg to report it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import io
import itertools
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from veil.client import voice
from veil.client.voice import (
    MAX_VOICE_MS,
    WAVEFORM_LEVELS,
    VoiceError,
    VoiceNote,
    audio_summary,
    encode_voice,
    find_player,
    format_duration,
    render_waveform,
    waveform_of,
)
from veil.errors import InvalidInputError
from veil.protocol.attachments import seal_attachment

SENTENCE = (
    "The quick brown fox jumps over the lazy dog, and then it rests quietly in the warm "
    "afternoon sun."
)
OTHER_SENTENCE = "Please remember to bring an umbrella tomorrow, because the forecast says rain."

# Duration tolerance against sox: Opus adds a pre-skip of 312 samples (6.5 ms) that the header
# tells decoders to drop, and pads the last 20 ms frame, which the last page's granule position
# trims; the resampler rounds the length to a 48 kHz sample. 60 ms (three Opus frames) leaves room
# for a decoder that honoured neither, and still fails any real error (a lost or doubled frame of
# input, a wrong sample rate: 22.05 kHz read as 24 kHz is 8 % off, 450 ms on this sentence).
DURATION_TOLERANCE_MS = 60
# Waveform tolerance against sox's per-segment RMS: the module measures after resampling to
# 48 kHz (a band-limited copy, with segment edges between the original's samples), sox on the
# original samples. Measured: at most 1 of 255. ±4 allows for other resampler builds; a waveform
# of another sentence or a reversed one is off by well over 100 somewhere.
WAVEFORM_TOLERANCE = 4


# --- espeak-ng and sox ---------------------------------------------------------------------------

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/bin"])
_PACKAGES = ("espeak-ng", "sox")  # each package's program has the package's name
_APT_TIMEOUT_S = 600


def _which(program: str) -> str | None:
    return shutil.which(program, path=_SEARCH_PATH)


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=_APT_TIMEOUT_S,
        check=False,
    )


def _install(packages: list[str]) -> str:
    """Install ``packages`` with apt-get (fetching the package lists once if they are missing);
    the last line apt-get printed on failure, else ""."""
    install = ("install", "-y", "--no-install-recommends", *packages)
    try:
        result = _apt_get(*install)
        if result.returncode != 0 and re.search(
            r"Unable to locate package|has no installation candidate|Failed to fetch",
            result.stderr,
        ):
            _apt_get("update")
            result = _apt_get(*install)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"apt-get failed: {exc}"
    if result.returncode == 0:
        return ""
    tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
    return f"apt-get could not install them: {tail[0]}"


@functools.cache
def _find_or_install() -> tuple[dict[str, str], str]:
    """({program: path}, reason if some are missing); tries apt-get once per process."""
    missing = [name for name in _PACKAGES if _which(name) is None]
    reason = ""
    if missing:
        if _which("apt-get") is None:
            reason = "there is no apt-get to install them"
        else:
            reason = _install(missing)
    found = {name: path for name in _PACKAGES if (path := _which(name)) is not None}
    if len(found) < len(_PACKAGES):
        absent = ", ".join(name for name in _PACKAGES if name not in found)
        return found, f"{absent} not installed and {reason or 'still missing after apt-get'}"
    return found, ""


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    found, reason = _find_or_install()
    if reason:
        print(f"voice tests skipped: {reason}")  # shown with -s; pytest -ra shows the skip reason
        pytest.skip(reason)
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)


def _speak(tools: dict[str, str], text: str, path: Path) -> Path:
    _run(tools["espeak-ng"], "-w", str(path), text)
    return path


def _sox(tools: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _run(tools["sox"], *args)


def _sox_seconds(tools: dict[str, str], path: Path) -> float:
    return float(_sox(tools, "--i", "-D", str(path)).stdout)


def _sox_samples(tools: dict[str, str], path: Path) -> int:
    return int(_sox(tools, "--i", "-s", str(path)).stdout)


def _sox_rms(tools: dict[str, str], path: Path, start: int, length: int) -> float:
    """sox's "RMS amplitude" of ``length`` samples from sample ``start``."""
    stat = _sox(tools, str(path), "-n", "trim", f"{start}s", f"{length}s", "stat").stderr
    match = re.search(r"RMS\s+amplitude:\s+([0-9.eE+-]+)", stat)
    assert match is not None, stat
    return float(match.group(1))


def _sox_waveform(tools: dict[str, str], path: Path, levels: int = WAVEFORM_LEVELS) -> list[int]:
    """The waveform as the module defines it, from sox's RMS of each of ``levels`` equal
    segments of the file's samples, scaled linearly so that the loudest is 255."""
    count = _sox_samples(tools, path)
    edges = [i * count // levels for i in range(levels + 1)]
    rms = [_sox_rms(tools, path, a, b - a) for a, b in itertools.pairwise(edges)]
    peak = max(rms)
    return [round(255 * value / peak) for value in rms]


def _sox_can_write(tools: dict[str, str], kind: str) -> bool:
    formats = _sox(tools, "-h").stdout
    match = re.search(r"AUDIO FILE FORMATS:(.*)", formats)
    return match is not None and kind in match.group(1).split()


# --- shared recordings (made once) ---------------------------------------------------------------


@pytest.fixture(scope="session")
def speech(tools: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _speak(tools, SENTENCE, tmp_path_factory.mktemp("speech") / "speech.wav")


@pytest.fixture(scope="session")
def other_speech(tools: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _speak(tools, OTHER_SENTENCE, tmp_path_factory.mktemp("other") / "other.wav")


@pytest.fixture(scope="session")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One second of 440 Hz at 16 kHz (no tools needed): for the tests of limits and bad input."""
    t = np.arange(16_000) / 16_000
    samples = (np.sin(2 * np.pi * 440 * t) * 12_000).astype(np.int16)
    return _write_wav(tmp_path_factory.mktemp("tone") / "tone.wav", samples, 16_000)


@pytest.fixture(scope="session")
def speech_note(speech: Path) -> VoiceNote:
    return encode_voice(speech)


def _opus_stream(data: bytes) -> tuple[str, int, int, int]:
    """(codec, rate, channels, decoded samples) of the first audio stream of ``data``."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        codec, rate, channels = stream.codec_context.name, stream.rate, stream.channels
        samples = sum(int(frame.samples) for frame in container.decode(stream))
    return codec, rate, channels, samples


def _levels(waveform: bytes) -> npt.NDArray[np.int64]:
    return np.frombuffer(waveform, dtype=np.uint8).astype(np.int64)


def _write_wav(path: Path, samples: npt.NDArray[np.int16], rate: int, channels: int = 1) -> Path:
    """A 16-bit PCM WAV written by the standard library (not PyAV)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return path


def _wav_header(rate: int, channels: int, bits: int, data_bytes: int, tag: int = 1) -> bytes:
    """A 44-byte WAV header (tag 1: integer PCM, 3: float), whatever the values."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


# --- encoding real speech ------------------------------------------------------------------------


def test_speech_encodes_to_ogg_opus(tools: dict[str, str], speech: Path) -> None:
    started = time.perf_counter()
    note = encode_voice(speech)
    elapsed = time.perf_counter() - started
    sox_ms = _sox_seconds(tools, speech) * 1000
    wav_size = speech.stat().st_size
    print(  # the figures for the report (shown with -s)
        f"WAV {wav_size:,} B, Ogg Opus {len(note.data):,} B, encoded in {elapsed:.3f} s, "
        f"duration {note.duration_ms} ms vs sox {sox_ms:.1f} ms"
    )
    assert note.data.startswith(b"OggS")
    assert note.data[28:36] == b"OpusHead"  # the first page holds the Opus identification header
    assert note.mime == "audio/ogg"
    codec, rate, channels, samples = _opus_stream(note.data)
    assert (codec, rate, channels) == ("opus", 48_000, 1)
    assert abs(note.duration_ms - sox_ms) <= DURATION_TOLERANCE_MS
    assert abs(samples * 1000 / rate - sox_ms) <= DURATION_TOLERANCE_MS
    assert len(note.waveform) == WAVEFORM_LEVELS
    # 24 kb/s Opus against 352.8 kb/s PCM: at least 8 times smaller, and about the set bit rate.
    assert len(note.data) * 8 < wav_size
    bits_per_second = len(note.data) * 8 * 1000 / note.duration_ms
    assert 12_000 < bits_per_second < 40_000


def test_voice_note_is_a_valid_voice_attachment(speech_note: VoiceNote) -> None:
    manifest, _ = seal_attachment(
        speech_note.data,
        "voice.ogg",
        speech_note.mime,
        "voice",
        duration_ms=speech_note.duration_ms,
        waveform=speech_note.waveform,
    )
    assert (manifest.kind, manifest.duration_ms) == ("voice", speech_note.duration_ms)
    assert manifest.waveform == speech_note.waveform
    with pytest.raises(dataclasses.FrozenInstanceError):
        speech_note.duration_ms = 1  # type: ignore[misc]


def test_audio_summary_of_the_sent_note_matches(speech_note: VoiceNote) -> None:
    # What a recipient computes from the Opus file: the same duration (Ogg Opus trims to the
    # exact length) and nearly the same waveform. Opus at 24 kb/s keeps the loudness of voiced
    # segments but not all the hiss of fricatives (measured: correlation 0.998, at most 19 of 255
    # apart, on an "s"); another sentence correlates at about 0.3.
    duration_ms, waveform = audio_summary(speech_note.data)
    assert duration_ms == speech_note.duration_ms
    assert np.corrcoef(_levels(waveform), _levels(speech_note.waveform))[0, 1] > 0.99
    assert np.abs(_levels(waveform) - _levels(speech_note.waveform)).max() <= 32
    _, coarse = audio_summary(speech_note.data, levels=8)
    assert len(coarse) == 8
    assert max(coarse) == 255


def test_waveform_agrees_with_sox(
    tools: dict[str, str], speech: Path, other_speech: Path, speech_note: VoiceNote
) -> None:
    expected = np.array(_sox_waveform(tools, speech))
    actual = _levels(speech_note.waveform)
    assert np.abs(actual - expected).max() <= WAVEFORM_TOLERANCE, (list(actual), list(expected))
    assert np.corrcoef(actual, expected)[0, 1] > 0.99
    # The same check refuses a wrong waveform: reversed, or of another sentence.
    assert np.abs(actual[::-1] - expected).max() > 10 * WAVEFORM_TOLERANCE
    other = _levels(encode_voice(other_speech).waveform)
    assert np.abs(other - expected).max() > 10 * WAVEFORM_TOLERANCE
    assert np.corrcoef(other, expected)[0, 1] < 0.9


def _first_loud(levels: npt.NDArray[np.int64], threshold: int = 10) -> int:
    return int(np.argmax(levels > threshold))


def test_silence_moves_the_low_levels(
    tools: dict[str, str], speech: Path, speech_note: VoiceNote, tmp_path: Path
) -> None:
    pad_s = 1.5
    leading, trailing = tmp_path / "leading.wav", tmp_path / "trailing.wav"
    _sox(tools, str(speech), str(leading), "pad", str(pad_s), "0")
    _sox(tools, str(speech), str(trailing), "pad", "0", str(pad_s))
    lead, trail = encode_voice(leading), encode_voice(trailing)
    for note in (lead, trail):
        expected_ms = speech_note.duration_ms + pad_s * 1000
        assert abs(note.duration_ms - expected_ms) <= DURATION_TOLERANCE_MS
    silent = math.floor(WAVEFORM_LEVELS * pad_s * 1000 / lead.duration_ms)  # whole silent levels
    lead_levels, trail_levels = _levels(lead.waveform), _levels(trail.waveform)
    assert lead_levels[:silent].max() == 0
    assert trail_levels[-silent:].max() == 0
    assert _first_loud(lead_levels) == silent
    assert _first_loud(trail_levels) == 0
    assert _first_loud(trail_levels[::-1]) >= silent
    assert _first_loud(lead_levels[::-1]) < silent // 2  # espeak-ng ends with a short pause


def _pyav_mp3(source_path: Path, out: Path, rate: int) -> Path:
    """An MP3 written by PyAV's LAME (with an ID3v2 tag and a LAME gapless header)."""
    with av.open(str(source_path), "r") as source, av.open(str(out), "w", format="mp3") as sink:
        stream = sink.add_stream("libmp3lame", rate=rate)
        for frame in source.decode(audio=0):
            frame.pts = None
            sink.mux(stream.encode(frame))
        sink.mux(stream.encode(None))
    return out


def _convert(tools: dict[str, str], speech: Path, kind: str, out: Path, rate: int = 22_050) -> Path:
    if kind != "mp3" or _sox_can_write(tools, "mp3"):
        _sox(tools, str(speech), "-r", str(rate), str(out))
        return out
    return _pyav_mp3(speech, out, rate)  # sox without libsox-fmt-mp3 cannot write MP3


@pytest.mark.parametrize("kind", ["flac", "ogg", "mp3"])
def test_other_input_formats(
    tools: dict[str, str], speech: Path, speech_note: VoiceNote, tmp_path: Path, kind: str
) -> None:
    converted = _convert(tools, speech, kind, tmp_path / f"speech.{kind}")
    note = encode_voice(converted)
    assert _opus_stream(note.data)[0] == "opus"
    if kind == "mp3":
        # MP3 pads to whole 1,152-sample frames after the encoder's delay (here up to ~100 ms). A
        # LAME gapless header (PyAV's writer adds one, sox's does not) lets FFmpeg trim that, and
        # the note lasts as long as the WAV; without one the padding is audio, and sox, reading
        # the same MP3, counts it too. (A sox without MP3 support has read none: PyAV wrote it.)
        candidates: list[float] = [speech_note.duration_ms]
        if _sox_can_write(tools, "mp3"):
            candidates.append(_sox_seconds(tools, converted) * 1000)
        assert min(abs(note.duration_ms - c) for c in candidates) <= DURATION_TOLERANCE_MS
        assert note.duration_ms >= speech_note.duration_ms - DURATION_TOLERANCE_MS
        return
    # FLAC is lossless and Ogg Vorbis trims to the exact length: the same duration as the WAV.
    assert abs(note.duration_ms - speech_note.duration_ms) <= DURATION_TOLERANCE_MS
    tolerance = 1 if kind == "flac" else 12  # lossless; Vorbis at sox's default quality
    assert np.abs(_levels(note.waveform) - _levels(speech_note.waveform)).max() <= tolerance


def test_sample_rate_change_mid_stream(tools: dict[str, str], speech: Path, tmp_path: Path) -> None:
    # Two MP3s joined end to end, at 22.05 and 44.1 kHz: the decoder changes rate mid-stream. Each
    # join keeps the second file's encoder delay and frame padding (about 50 ms at 22.05 kHz), so
    # the whole lasts the sum of the parts within 150 ms; a part resampled at the other's rate
    # would be seconds off.
    first = _convert(tools, speech, "mp3", tmp_path / "first.mp3", 22_050)
    second = _convert(tools, speech, "mp3", tmp_path / "second.mp3", 44_100)
    joined = first.read_bytes() + second.read_bytes()
    parts = encode_voice(first).duration_ms + encode_voice(second).duration_ms
    duration_ms, _ = audio_summary(joined)
    assert abs(duration_ms - parts) <= 150


def test_undecodable_packets_are_skipped_up_to_a_limit(speech: Path, tmp_path: Path) -> None:
    # Each copy of this MP3's start after the first puts an ID3v2 tag where the decoder expects a
    # frame: one undecodable packet. Ten are skipped (as players do); eleven refuse the file.
    piece = _pyav_mp3(speech, tmp_path / "piece.mp3", 22_050).read_bytes()[:6000]
    ten_bad, eleven_bad = piece * 11, piece * 12
    duration_ms, _ = audio_summary(ten_bad)
    assert duration_ms > 11 * audio_summary(piece)[0] * 0.9
    with pytest.raises(VoiceError, match="damaged"):
        audio_summary(eleven_bad)


def test_wav_cut_inside_its_samples_gives_the_audio_that_is_there(
    tools: dict[str, str], speech: Path, tmp_path: Path
) -> None:
    data = speech.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: 44 + (len(data) - 44) // 2])  # header intact, half of the samples
    note = encode_voice(cut)
    stat = _sox(tools, str(cut), "-n", "stat").stderr  # sox warns of the early end, then reads
    match = re.search(r"Length \(seconds\):\s+([0-9.]+)", stat)
    assert match is not None, stat
    assert abs(note.duration_ms - float(match.group(1)) * 1000) <= DURATION_TOLERANCE_MS
    assert note.duration_ms < _sox_seconds(tools, speech) * 1000 * 0.6


def test_stereo_44k_is_downmixed_and_resampled(
    tools: dict[str, str], speech: Path, speech_note: VoiceNote, tmp_path: Path
) -> None:
    stereo = tmp_path / "stereo.wav"
    _sox(tools, str(speech), "-c", "2", "-r", "44100", str(stereo))
    note = encode_voice(stereo)
    assert _opus_stream(note.data)[1:3] == (48_000, 1)
    assert abs(note.duration_ms - speech_note.duration_ms) <= DURATION_TOLERANCE_MS
    assert np.abs(_levels(note.waveform) - _levels(speech_note.waveform)).max() <= 2


# --- limits --------------------------------------------------------------------------------------


def test_longer_than_the_limit_is_refused(speech: Path, speech_note: VoiceNote) -> None:
    with pytest.raises(VoiceError, match="longer than"):
        encode_voice(speech, max_duration_ms=speech_note.duration_ms // 2)
    with pytest.raises(VoiceError, match="longer than"):
        audio_summary(speech_note.data, max_duration_ms=1000)
    assert encode_voice(speech, max_duration_ms=speech_note.duration_ms + 100).duration_ms > 0


def test_decoding_stops_at_the_limit() -> None:
    # An hour of 8 kHz audio in 28.8 MB: decoding it all takes seconds; the limit stops it early.
    hour = _wav_header(8000, 1, 8, 8000 * 3600) + bytes([128]) * (8000 * 3600)
    started = time.perf_counter()
    with pytest.raises(VoiceError, match="longer than 0:02"):
        audio_summary(hour, max_duration_ms=2000)
    assert time.perf_counter() - started < 3.0


def test_file_over_max_input_bytes_is_refused_before_opening(
    tone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_open(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the file was opened")

    monkeypatch.setattr(voice, "open", no_open, raising=False)
    size = tone.stat().st_size
    with pytest.raises(VoiceError, match="larger than 1,000 bytes"):
        encode_voice(tone, max_input_bytes=1000)
    with pytest.raises(AssertionError, match="was opened"):
        encode_voice(tone, max_input_bytes=size)


def test_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    with pytest.raises(VoiceError, match="not a regular file"):
        encode_voice(fifo)  # would block forever if it were opened for reading
    with pytest.raises(VoiceError, match="not a regular file"):
        encode_voice(tmp_path)
    with pytest.raises(VoiceError, match="No such file"):
        encode_voice(tmp_path / "missing.wav")


@pytest.mark.parametrize(
    "call",
    [
        lambda path: encode_voice(path, max_duration_ms=0),
        lambda path: encode_voice(path, max_input_bytes=-1),
        lambda path: audio_summary(b"x", levels=0),
        lambda path: audio_summary(b"x", levels=257),
        lambda path: audio_summary(b"x", max_duration_ms=True),
    ],
)
def test_bad_arguments(call: Callable[[Path], object], tone: Path) -> None:
    with pytest.raises(VoiceError):
        call(tone)


# --- hostile and broken input --------------------------------------------------------------------


def _video_only() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


BAD_FILES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda wav: b"", "empty"),
    "random bytes": (lambda wav: random.Random(7).randbytes(20_000), "not audio"),
    "text": (lambda wav: b"Dear diary, today I recorded nothing.\n" * 100, "not audio"),
    "WAV cut in its header": (lambda wav: wav[:30], "not audio"),
    "WAV header without samples": (lambda wav: wav[:44], "no audio"),
    "video without audio": (lambda wav: _video_only(), "no audio stream"),
    "sample rate of 1 Hz": (
        lambda wav: _wav_header(1, 1, 16, 2000) + bytes(2000),
        "sample rate",
    ),
    "sample rate of 2^31 - 1 Hz": (
        lambda wav: _wav_header(2**31 - 1, 1, 16, 2000) + bytes(2000),
        "sample rate",
    ),
    "no channels": (lambda wav: _wav_header(8000, 0, 16, 2000) + bytes(2000), "not audio"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_raise_voice_error(name: str, tone: Path, tmp_path: Path) -> None:
    make, message = BAD_FILES[name]
    data = make(tone.read_bytes())
    path = tmp_path / "input.wav"
    path.write_bytes(data)
    with pytest.raises(VoiceError, match=message) as raised:
        encode_voice(path)
    error = raised.value
    assert "\n" not in str(error)
    # No chained exception (an av.error.* with FFmpeg's own text) is shown with it.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    assert isinstance(error, InvalidInputError)
    assert isinstance(error, ValueError)
    with pytest.raises(VoiceError, match=message):
        audio_summary(data)


def test_error_message_names_the_file_not_its_contents(tmp_path: Path) -> None:
    secret = b"correct horse battery staple " * 20
    path = tmp_path / "notes.txt"
    path.write_bytes(secret)
    with pytest.raises(VoiceError) as raised:
        encode_voice(path)
    assert "notes.txt" in str(raised.value)
    assert "horse" not in str(raised.value)


def test_truncated_ogg(speech_note: VoiceNote) -> None:
    with pytest.raises(VoiceError):
        audio_summary(speech_note.data[:100])  # inside the header pages
    with pytest.raises(VoiceError):
        audio_summary(speech_note.data[:4])
    # Cut among the audio pages: the pages that are whole still play (as in any player).
    duration_ms, _ = audio_summary(speech_note.data[: len(speech_note.data) // 2])
    assert 0 < duration_ms < speech_note.duration_ms


def test_playlist_cannot_make_ffmpeg_open_other_files(
    speech: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FFmpeg probes this as its "concat" demuxer, which would open speech.wav (relative names are
    # allowed even in its safe mode) and decode it as if it were this file.
    shutil.copy(speech, tmp_path / "speech.wav")
    monkeypatch.chdir(tmp_path)
    playlist = b"ffconcat version 1.0\nfile speech.wav\n"
    with pytest.raises(VoiceError):
        audio_summary(playlist)
    hls = b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nspeech.wav\n#EXT-X-ENDLIST\n"
    with pytest.raises(VoiceError):
        audio_summary(hls)


def test_nan_and_infinite_float_samples() -> None:
    samples = np.array([np.nan, np.inf, -np.inf, 1e30, 0.5] * 2000, dtype="<f4")
    duration_ms, waveform = audio_summary(
        _wav_header(48_000, 1, 32, 40_000, tag=3) + samples.tobytes()
    )
    assert duration_ms == 208  # 10,000 samples at 48 kHz
    assert len(waveform) == WAVEFORM_LEVELS
    assert max(waveform) == 255


@pytest.mark.parametrize("channels", [2, 9, 64])
def test_many_channels_are_averaged(channels: int, tmp_path: Path) -> None:
    # libswresample refuses to down-mix some unnamed layouts (9, 32, 64 channels): the module
    # averages channels itself. One loud channel then a silent one: the level halves.
    rate, count = 16_000, 16_000
    loud = np.zeros((count, channels), dtype=np.int16)
    loud[: count // 2, 0] = 16_000
    loud[count // 2 :, 0] = 8_000
    path = _write_wav(tmp_path / "multi.wav", loud.reshape(-1), rate, channels)
    note = encode_voice(path)
    assert note.duration_ms == 1000
    levels = _levels(note.waveform)
    assert abs(levels[:20].mean() - 255) <= 2
    assert abs(levels[-20:].mean() - 128) <= 2


_FUZZ = """
import random, sys
from veil.client.voice import VoiceError, audio_summary
seeds = [open(p, "rb").read() for p in sys.argv[2:]]
rng = random.Random(int(sys.argv[1]))
counts = {"ok": 0, "VoiceError": 0}
for _ in range(60):
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 12)):
        at = rng.randrange(len(data))
        op = rng.random()
        if op < 0.7:
            data[at] = rng.randrange(256)
        elif op < 0.85:
            del data[at : at + rng.randint(1, 300)]
        else:
            data[at:at] = rng.randbytes(rng.randint(1, 40))
        data = data or bytearray(b"x")
    try:
        audio_summary(bytes(data), max_duration_ms=10_000)
        counts["ok"] += 1
    except VoiceError:
        counts["VoiceError"] += 1
print(counts)
"""


def test_mutated_audio_never_crashes(
    tools: dict[str, str], speech: Path, speech_note: VoiceNote, tmp_path: Path
) -> None:
    # In a subprocess: a crash inside FFmpeg (a segfault) fails this test instead of the run.
    short = tmp_path / "short.wav"
    _sox(tools, str(speech), str(short), "trim", "0", "1.5")
    flac, vorbis = tmp_path / "short.flac", tmp_path / "short.ogg"
    _sox(tools, str(short), str(flac))
    _sox(tools, str(short), str(vorbis))
    opus = tmp_path / "short.opus"
    opus.write_bytes(encode_voice(short).data)
    seeds = [str(p) for p in (short, flac, vorbis, opus)]
    result = subprocess.run(
        [sys.executable, "-c", _FUZZ, "20240601", *seeds],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = ast.literal_eval(result.stdout.strip())
    assert counts["ok"] + counts["VoiceError"] == 60
    assert counts["ok"] > 0
    assert counts["VoiceError"] > 0


# --- the waveform --------------------------------------------------------------------------------


def test_waveform_of_known_segments() -> None:
    samples = np.concatenate(
        [np.full(100, 1.0), np.full(100, 0.5), np.zeros(100), np.full(100, -0.25)]
    )
    assert list(waveform_of(samples, 4)) == [255, 128, 0, 64]  # 127.5 rounds to even, 63.75 up
    # Scale and dtype do not matter: the loudest segment is 255.
    assert waveform_of((samples * 8000).astype(np.int16), 4) == waveform_of(samples, 4)
    # Two levels of three samples: the middle sample is cut in half by the edge.
    assert list(waveform_of(np.array([1.0, 1.0, 0.0]), 2)) == [255, round(255 / math.sqrt(3))]


def test_waveform_of_silence_and_nothing() -> None:
    assert waveform_of(np.zeros(48_000)) == bytes(WAVEFORM_LEVELS)
    assert waveform_of(np.zeros(0, dtype=np.float32), 5) == bytes(5)
    assert waveform_of(np.array([np.nan, np.inf, 0.0, 0.0]), 2) == bytes(2)
    assert len(waveform_of(np.ones(10))) == WAVEFORM_LEVELS
    assert waveform_of(np.ones(10)) == bytes([255]) * WAVEFORM_LEVELS


@pytest.mark.parametrize(
    ("samples", "levels"),
    [(np.zeros((2, 10)), 4), (np.array(["a", "b"]), 2), (np.ones(10), 0), (np.ones(10), 300)],
)
def test_waveform_of_bad_arguments(samples: npt.NDArray[np.generic], levels: int) -> None:
    with pytest.raises(VoiceError):
        waveform_of(samples, levels)


def _noise_wav(path: Path, count: int) -> tuple[Path, npt.NDArray[np.int16]]:
    """``count`` samples of white noise at 48 kHz whose loudness steps 40 times."""
    rng = np.random.default_rng(count)
    envelope = np.repeat(rng.uniform(0.05, 1.0, 40), -(-count // 40))[:count]
    samples = (rng.standard_normal(count) * envelope * 6000).clip(-32768, 32767).astype(np.int16)
    return _write_wav(path, samples, 48_000), samples


@pytest.mark.parametrize("count", [48_000, 48_001, 47_999, 96_017])
def test_streaming_waveform_is_close_to_waveform_of(count: int, tmp_path: Path) -> None:
    # While decoding, the module keeps sums of squares over 1 ms blocks, not the samples; a
    # segment edge inside a block splits the block's energy in proportion. At 48 kHz (nothing to
    # resample) the levels must be those of waveform_of on the samples but for that split: on
    # white noise with 20 ms segments it moves a level by at most about 2 % of 255.
    path, samples = _noise_wav(tmp_path / "noise.wav", count)
    duration_ms, waveform = audio_summary(path.read_bytes())
    assert duration_ms == round(count / 48)
    difference = np.abs(_levels(waveform) - _levels(waveform_of(samples)))
    assert difference.max() <= 4
    assert difference.mean() <= 1.5


@pytest.mark.parametrize("count", [1, 7, 100])
def test_tiny_clips(count: int, tmp_path: Path) -> None:
    path, _ = _noise_wav(tmp_path / "tiny.wav", count)
    duration_ms, waveform = audio_summary(path.read_bytes())
    assert duration_ms == max(1, round(count / 48))
    assert len(waveform) == WAVEFORM_LEVELS
    assert max(waveform) == 255
    note = encode_voice(path)  # shorter than one 20 ms Opus frame: padded, then trimmed
    assert note.duration_ms == duration_ms
    assert _opus_stream(note.data)[0] == "opus"


# --- drawing and durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "width", "expected"),
    [
        (bytes([0, 255]), 2, "▁█"),
        (bytes([0, 255]), 4, "▁▁██"),
        (bytes(range(0, 256, 32)), 8, "▁▂▃▄▅▆▇█"),
        (bytes([31, 32, 223, 224]), 4, "▁▂▇█"),
        (bytes([0, 255, 0, 0]), 2, "█▁"),
        (bytes([0, 0, 0, 200]), 2, "▁▇"),
        (bytes([10, 100, 200]), 1, "▇"),
        (b"", 24, ""),
    ],
)
def test_render_waveform(levels: bytes, width: int, expected: str) -> None:
    assert render_waveform(levels, width) == expected


def test_render_waveform_bad_levels() -> None:
    with pytest.raises(VoiceError):
        render_waveform([0, 256], 2)  # type: ignore[arg-type]
    with pytest.raises(VoiceError):
        render_waveform(bytes(2), -3)


def test_render_waveform_of_speech(speech_note: VoiceNote) -> None:
    drawn = render_waveform(speech_note.waveform)
    assert len(drawn) == 24
    assert set(drawn) <= set("▁▂▃▄▅▆▇█")
    assert "█" in drawn  # the loudest level is 255
    assert drawn[-1] == "▁"  # espeak-ng ends with a pause
    with pytest.raises(VoiceError):
        render_waveform(speech_note.waveform, 0)


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (0, "0:00"),
        (7_400, "0:07"),
        (7_500, "0:08"),
        (59_499, "0:59"),
        (59_500, "1:00"),
        (65_000, "1:05"),
        (MAX_VOICE_MS, "15:00"),
        (3_599_000, "59:59"),
        (3_600_000, "1:00:00"),
        (3_723_000, "1:02:03"),
        (36_000_000, "10:00:00"),
    ],
)
def test_format_duration(ms: int, expected: str) -> None:
    assert format_duration(ms) == expected


def test_format_duration_refuses_negative() -> None:
    with pytest.raises(VoiceError):
        format_duration(-1)


# --- finding a player ----------------------------------------------------------------------------


def _fake_program(directory: Path, name: str, executable: bool = True) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def test_find_player_with_empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", "")
    assert find_player() is None
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_player() is None


def test_find_player_finds_paplay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    paplay = _fake_program(tmp_path, "paplay")
    _fake_program(tmp_path, "mpv", executable=False)  # not executable: not a player
    _fake_program(tmp_path, "play")  # sox's player: cannot play Ogg Opus here
    _fake_program(tmp_path, "aplay")
    monkeypatch.setenv("PATH", str(tmp_path))
    command = find_player()
    assert command == [str(paplay)]
    assert os.access(command[0], os.X_OK)


def test_find_player_prefers_ffplay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_program(tmp_path, "paplay")
    ffplay = _fake_program(tmp_path, "ffplay")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_player() == [str(ffplay), "-nodisp", "-autoexit", "-loglevel", "error"]


def test_only_players_of_ogg_opus_are_known(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("play", "aplay", "ogg123", "sox", "oggdec"):
        _fake_program(tmp_path, name)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_player() is None


def test_source_metadata_is_not_copied(tools: dict[str, str], speech: Path, tmp_path: Path) -> None:
    tagged = tmp_path / "tagged.flac"
    _sox(tools, str(speech), "--comment", "Recorded at 51.5072N 0.1276W by Alice", str(tagged))
    with av.open(str(tagged), "r") as container:
        assert "Alice" in str(container.metadata)  # the source does carry it
    data = encode_voice(tagged).data
    assert b"Alice" not in data
    assert b"51.5072" not in data
    tags = data.index(b"OpusTags")
    vendor_length = int.from_bytes(data[tags + 8 : tags + 12], "little")
    comments = data[tags + 12 + vendor_length : tags + 16 + vendor_length]
    assert int.from_bytes(comments, "little") == 0  # no user comment at all
    assert b"Lavf" not in data  # "bitexact": no library version

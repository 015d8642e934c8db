"""Voice messages: recorded speech sent as an Opus-in-Ogg attachment of kind ``"voice"``.

A voice message is an audio attachment (``veil.protocol.attachments``, kind ``"voice"``) whose
manifest also carries the clip's duration in milliseconds and a *waveform*: :data:`WAVEFORM_LEVELS`
loudness levels (0 … 255) a client draws before (or without) fetching the audio. Both are computed
here, from the decoded samples, when the message is made (:func:`encode_voice`); a client can
compute the same summary for any audio file it sends or receives (:func:`audio_summary`).

**Why PyAV.** PyAV's wheels bundle FFmpeg, with the ``libopus`` encoder, the decoders of the usual
formats (WAV, MP3, FLAC, Ogg Vorbis/Opus, M4A/AAC, WebM …) and ``libswresample``: no system
``ffmpeg``, ``sox`` or ``opusenc`` is needed and nothing is run in a shell. Everything is done in
memory: the input file is read whole (at most ``max_input_bytes``, checked before it is opened)
and demuxed from that buffer with every URL protocol disallowed, so a hostile "audio file" that
is really a playlist (an ``ffconcat`` or HLS list naming other files) cannot make FFmpeg open
anything else.

**Encoding.** The first audio stream is decoded, down-mixed to mono (the mean of its channels,
computed here: libswresample refuses to down-mix some channel counts that have no named layout)
and resampled to 48 kHz (Opus's native rate: a 16 or 24 kHz input would only cap the bandwidth,
and every Opus decoder outputs 48 kHz anyway), clipped to [-1, 1] (NaN and infinities of a float
source become 0 / ±1), then encoded with ``libopus``:

* ``application=voip``: Opus's speech mode (SILK or hybrid, tuned for intelligibility);
* mono at :data:`BITRATE` = 24 kb/s, VBR, 20 ms frames: speech at 24 kb/s is near-transparent
  wideband/fullband Opus; a second channel would double the size and carry nothing for a voice;
* Ogg container (RFC 7845) written "bitexact": no encoder version string, a fixed stream serial,
  and none of the source's metadata (title, artist, GPS tags of a phone recording …) is copied.

Decoding stops, with :class:`VoiceError`, as soon as more than ``max_duration_ms`` of audio has
come out, so neither time nor memory grows past that bound whatever the input claims. A packet the
decoder finds invalid is skipped, as players do (up to ten; more and the file is refused as
damaged); a file cut short gives the audio before the cut; a sample rate outside 1 … 768 kHz is
refused; a stream that changes rate midway (MP3 files joined end to end) is resampled run by run.

**Waveform.** The mono samples are split into ``levels`` equal segments; each level is the RMS of
its segment, linearly scaled so that the loudest segment is 255 (rounded; a silent clip is all
zeros). Linear RMS rather than decibels: it is what "RMS amplitude" means in any audio tool (the
tests check it against ``sox``), silence reads as 0 without an arbitrary dB floor deciding how
quiet is "nothing", and speech shows its syllables and pauses plainly. While decoding, only sums
of squares over 1 ms blocks are kept (not the samples, so memory stays small whatever the
duration): a segment edge that falls inside a block takes the block's energy in proportion to the
samples on each side. That is exact for a steady sound; on white noise cut into 20 ms segments (a
one-second clip) it moves a level by at most about 2 % of 255, and less for longer clips.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import av
import av.error
import numpy as np
import numpy.typing as npt

from veil.errors import InvalidInputError
from veil.protocol.attachments import MAX_WAVEFORM

__all__ = [
    "BITRATE",
    "MAX_INPUT_BYTES",
    "MAX_VOICE_MS",
    "SAMPLE_RATE",
    "WAVEFORM_LEVELS",
    "VoiceError",
    "VoiceNote",
    "audio_summary",
    "encode_voice",
    "find_player",
    "format_duration",
    "render_waveform",
    "waveform_of",
]

WAVEFORM_LEVELS: Final = 48
"""Levels in a waveform summary."""
MAX_VOICE_MS: Final = 15 * 60 * 1000
"""Default longest voice message (15 minutes; about 2.7 MB at :data:`BITRATE`)."""
MAX_INPUT_BYTES: Final = 64 * 1024 * 1024
"""Default largest input file :func:`encode_voice` reads."""
SAMPLE_RATE: Final = 48_000
"""Rate of the encoded audio, and of the samples the duration and waveform are computed from."""
BITRATE: Final = 24_000
"""Opus target bit rate, bits per second (VBR)."""

_OPUS_OPTIONS: Final = {"application": "voip", "vbr": "on", "frame_duration": "20"}
# No URL protocol at all: the input is always read from memory, and nested opens (ffconcat, HLS,
# DASH lists naming other files or URLs) must fail.
_INPUT_OPTIONS: Final = {"protocol_whitelist": "none"}
_BLOCK: Final = SAMPLE_RATE // 1000  # samples per energy block while streaming: 1 ms
_MAX_BAD_PACKETS: Final = 10
_MIN_RATE: Final = 1_000  # Hz; outside this range a "sample rate" is a hostile or broken header
_MAX_RATE: Final = 768_000
_INTEGER_SCALE: Final = {"u8": 128.0, "s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}
_INTEGER_OFFSET: Final = {"u8": 128.0}
_BARS: Final = "▁▂▃▄▅▆▇█"
_TIME_BASE: Final = Fraction(1, SAMPLE_RATE)
# Anything PyAV, FFmpeg or numpy may raise on malformed input; turned into VoiceError at the edge.
_DECODE_ERRORS: Final = (
    av.error.FFmpegError,
    OSError,
    EOFError,
    ValueError,
    TypeError,
    ArithmeticError,
    LookupError,
    RuntimeError,
    MemoryError,
)
# Players that can play an Ogg Opus file, with the arguments that make them play it once, without
# a window, quietly, then exit. paplay and pw-play read files with libsndfile (Ogg Opus since
# 1.0.29); opusdec plays to the sound card when given no output file. Left out: sox's `play`
# (Debian's sox has no Opus handler and takes any .ogg for Vorbis), ogg123 (Opus only from
# vorbis-tools 1.4.3, built with opusfile; Debian 12 has 1.4.2), aplay (WAV and raw PCM only).
_PLAYERS: Final = (
    ("ffplay", ("-nodisp", "-autoexit", "-loglevel", "error")),
    ("mpv", ("--no-video", "--really-quiet")),
    ("pw-play", ()),
    ("paplay", ()),
    ("cvlc", ("--play-and-exit", "--quiet")),
    ("gst-play-1.0", ("--quiet",)),
    ("opusdec", ("--quiet",)),
)

Samples = npt.NDArray[np.float32]


class VoiceError(InvalidInputError):
    """The audio cannot be used: unreadable, not audio, no audio stream, empty, too long or too
    large. The message is one line and never quotes the file's contents."""


@dataclass(frozen=True, slots=True)
class VoiceNote:
    """An encoded voice message, ready to be sent as an attachment of kind ``"voice"``."""

    data: bytes
    """Ogg container, one Opus stream: mono, 48 kHz, :data:`BITRATE` VBR, VOIP application."""
    duration_ms: int
    """Duration of the audio, at least 1."""
    waveform: bytes
    """:data:`WAVEFORM_LEVELS` levels, 0 … 255 (see :func:`waveform_of`)."""
    mime: str = "audio/ogg"


# --- the waveform --------------------------------------------------------------------------------


def _check_levels(levels: int) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= MAX_WAVEFORM:
        raise VoiceError(f"a waveform has 1 to {MAX_WAVEFORM} levels")


def _segment_levels(sums: npt.NDArray[np.float64], block: int, count: int, levels: int) -> bytes:
    """Levels of ``count`` samples whose squares summed over consecutive blocks of ``block``
    samples (the last block may be shorter) are ``sums``; an edge inside a block takes a share of
    its energy in proportion to the samples on each side (exact when ``block`` is 1)."""
    if count == 0:
        return bytes(levels)
    edges = np.arange(levels + 1, dtype=np.float64) * count / levels
    index = np.minimum(edges // block, len(sums) - 1).astype(np.intp)
    start = index * block
    length = np.minimum(block, count - start)
    cumulative = np.concatenate(([0.0], np.cumsum(sums)))
    energy = cumulative[index] + sums[index] * (edges - start) / length
    rms = np.sqrt(np.maximum(np.diff(energy), 0.0) / (count / levels))
    peak = float(rms.max())
    if not peak > 0.0:
        return bytes(levels)
    return bytes(np.rint(rms * (255.0 / peak)).astype(np.uint8))


def waveform_of(samples: npt.NDArray[np.generic], levels: int = WAVEFORM_LEVELS) -> bytes:
    """The waveform summary of mono ``samples`` (a 1-D array of any real dtype and scale).

    The samples are split into ``levels`` equal segments (edges at ``i * len / levels``; a sample
    cut by an edge counts for each side in proportion). Each level is the segment's RMS, linearly
    scaled so that the loudest segment is 255: ``round(255 * rms / max(rms))``. All-silent (or
    empty) audio gives all zeros; NaN and infinities count as silence.
    """
    _check_levels(levels)
    array = np.asarray(samples)
    if array.ndim != 1 or array.dtype.kind not in "biuf":
        raise VoiceError("a waveform is computed from a one-dimensional array of real samples")
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.max(np.abs(values), initial=0.0))
    if peak > 0.0:
        values /= peak  # the levels do not depend on scale; this keeps the squares finite
    return _segment_levels(np.square(values), 1, len(values), levels)


class _Energy:
    """Sums of squares of a stream of samples over blocks of :data:`_BLOCK` samples: what a
    waveform needs, in 1/48 of the memory of the samples."""

    def __init__(self) -> None:
        self._sums: list[npt.NDArray[np.float64]] = []
        self._tail: npt.NDArray[np.float64] = np.zeros(0)
        self.count = 0

    def add(self, chunk: Samples) -> None:
        data = np.concatenate((self._tail, chunk.astype(np.float64)))
        whole = len(data) - len(data) % _BLOCK
        self._sums.append(np.square(data[:whole]).reshape(-1, _BLOCK).sum(axis=1))
        self._tail = data[whole:]
        self.count += len(chunk)

    def waveform(self, levels: int) -> bytes:
        tail = [np.square(self._tail).sum(keepdims=True)] if len(self._tail) else []
        sums = np.concatenate([*self._sums, *tail])
        return _segment_levels(sums, _BLOCK, self.count, levels)


# --- decoding ------------------------------------------------------------------------------------


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror).splitlines()[0]
    if isinstance(exc, MemoryError):
        return "out of memory"
    return type(exc).__name__


@contextmanager
def _as_voice_errors(label: str) -> Iterator[None]:
    """Re-raise whatever decoding or encoding raises as a one-line :class:`VoiceError`."""
    try:
        yield
    except VoiceError:
        raise
    except _DECODE_ERRORS as exc:
        raise VoiceError(f"{label} is not audio Veil can read ({_failure_reason(exc)})") from None


def _sanitized(samples: npt.NDArray[np.generic]) -> Samples:
    """float32 in [-1, 1]: NaN becomes 0, infinities and overshoots are clipped."""
    finite = np.nan_to_num(samples.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(finite, -1.0, 1.0)


def _downmixed(frame: av.AudioFrame) -> Samples:
    """The frame's samples (any sample format, any number of channels) as one float channel, the
    mean of its channels. Done here rather than by libswresample, which refuses (or worse) some
    channel counts without a known layout."""
    kind = frame.format.packed.name
    values = frame.to_ndarray().astype(np.float64)
    if kind in _INTEGER_SCALE:
        values = (values - _INTEGER_OFFSET.get(kind, 0.0)) / _INTEGER_SCALE[kind]
    elif kind not in ("flt", "dbl"):
        raise VoiceError(f"unsupported sample format {kind!r}")
    if frame.format.is_planar:  # (channels, samples)
        return _sanitized(values.mean(axis=0))
    return _sanitized(values.reshape(-1, frame.layout.nb_channels).mean(axis=1))


def _decoded(
    container: av.container.InputContainer, stream: av.AudioStream, label: str
) -> Iterator[av.AudioFrame]:
    """The stream's decoded frames. A packet the decoder calls invalid is skipped, as players
    do (a damaged frame, an ID3 tag inside an MP3); more than :data:`_MAX_BAD_PACKETS` of them
    and the file is refused as damaged."""
    bad = 0
    for packet in container.demux(stream):
        try:
            frames = stream.decode(packet)
        except av.error.InvalidDataError:
            bad += 1
            if bad > _MAX_BAD_PACKETS:
                raise VoiceError(f"{label} is damaged (undecodable packets)") from None
            continue
        yield from frames


def _mono_frames(frames: Iterable[av.AudioFrame], label: str) -> Iterator[av.AudioFrame]:
    """Each decoded frame as a mono float frame at its own rate."""
    for frame in frames:
        rate = frame.sample_rate
        if not _MIN_RATE <= rate <= _MAX_RATE:
            raise VoiceError(f"{label} has an unusable sample rate ({rate} Hz)")
        mono = av.AudioFrame.from_ndarray(
            _downmixed(frame).reshape(1, -1), format="flt", layout="mono"
        )
        mono.sample_rate = rate
        yield mono


def _resampled(frames: Iterable[av.AudioFrame]) -> Iterator[av.AudioFrame]:
    """Mono frames at any rate as frames at :data:`SAMPLE_RATE`. A stream may change its rate
    (MP3 files joined end to end do): each run of one rate gets its own resampler, flushed at the
    end of the run."""
    resampler: av.AudioResampler | None = None
    rate = pts = 0
    for frame in frames:
        if resampler is None or frame.sample_rate != rate:
            if resampler is not None:
                yield from resampler.resample(None)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            rate, pts = frame.sample_rate, 0
        frame.time_base = Fraction(1, rate)
        frame.pts = pts
        pts += frame.samples
        yield from resampler.resample(frame)
    if resampler is not None:
        yield from resampler.resample(None)


def _decode_mono(data: bytes, label: str, max_duration_ms: int) -> Iterator[Samples]:
    """The first audio stream of ``data`` as mono float32 chunks at :data:`SAMPLE_RATE`;
    :class:`VoiceError` as soon as more than ``max_duration_ms`` has been decoded."""
    limit = max_duration_ms * SAMPLE_RATE // 1000
    decoded = 0
    with av.open(io.BytesIO(data), "r", options=dict(_INPUT_OPTIONS)) as container:
        if not container.streams.audio:
            raise VoiceError(f"{label} has no audio stream")
        decoded_frames = _decoded(container, container.streams.audio[0], label)
        for frame in _resampled(_mono_frames(decoded_frames, label)):
            chunk = _sanitized(frame.to_ndarray().reshape(-1))
            decoded += len(chunk)
            if decoded > limit:
                raise VoiceError(f"{label} is longer than {_limit_text(max_duration_ms)}")
            yield chunk


def _limit_text(max_duration_ms: int) -> str:
    if max_duration_ms % 1000:
        return f"{max_duration_ms:,} ms, the limit"
    return f"{format_duration(max_duration_ms)}, the limit"


def _encode_ogg_opus(chunks: Iterable[Samples]) -> bytes:
    """Mono 48 kHz float chunks → an Ogg Opus file (see the module's docstring for the settings)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libopus", rate=SAMPLE_RATE, options=dict(_OPUS_OPTIONS))
        stream.bit_rate = BITRATE
        stream.layout = "mono"
        pts = 0
        for chunk in chunks:
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.time_base = _TIME_BASE
            frame.pts = pts
            pts += len(chunk)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _measured(chunks: Iterable[Samples], energy: _Energy) -> Iterator[Samples]:
    for chunk in chunks:
        energy.add(chunk)
        yield chunk


def _duration_ms(energy: _Energy, label: str) -> int:
    if energy.count == 0:
        raise VoiceError(f"{label} contains no audio")
    return max(1, (energy.count * 1000 + SAMPLE_RATE // 2) // SAMPLE_RATE)


# --- the API -------------------------------------------------------------------------------------


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VoiceError(f"{name} must be a positive integer")


def _check_file(info: os.stat_result, label: str, max_input_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise VoiceError(f"{label} is not a regular file")
    if info.st_size == 0:
        raise VoiceError(f"{label} is empty")
    if info.st_size > max_input_bytes:
        raise VoiceError(f"{label} is larger than {max_input_bytes:,} bytes, the limit")


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)  # a FIFO swapped in after the stat must not block


def _read_file(path: str | os.PathLike[str], label: str, max_input_bytes: int) -> bytes:
    """The file's bytes; its type and size are checked before it is opened (and again after)."""
    try:
        _check_file(os.stat(path), label, max_input_bytes)
        with open(path, "rb", opener=_nonblocking) as file:
            _check_file(os.fstat(file.fileno()), label, max_input_bytes)
            data = file.read(max_input_bytes + 1)
    except OSError as exc:
        raise VoiceError(f"cannot read {label}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > max_input_bytes:
        raise VoiceError(f"{label} is larger than {max_input_bytes:,} bytes, the limit")
    return data


def encode_voice(
    path: str | os.PathLike[str],
    *,
    max_duration_ms: int = MAX_VOICE_MS,
    max_input_bytes: int = MAX_INPUT_BYTES,
) -> VoiceNote:
    """Make a voice message of the audio file at ``path`` (any format PyAV reads; its first audio
    stream): Opus in Ogg, mono, 48 kHz, with the duration and waveform of the decoded samples.

    :class:`VoiceError` if the file is not a regular file, is empty or larger than
    ``max_input_bytes`` (checked before it is read), is not audio, has no audio stream or no
    samples, or holds more than ``max_duration_ms`` of audio (decoding stops there).
    """
    _check_positive("max_duration_ms", max_duration_ms)
    _check_positive("max_input_bytes", max_input_bytes)
    label = repr(os.fsdecode(path))
    data = _read_file(path, label, max_input_bytes)
    energy = _Energy()
    with _as_voice_errors(label):
        ogg = _encode_ogg_opus(_measured(_decode_mono(data, label, max_duration_ms), energy))
    return VoiceNote(ogg, _duration_ms(energy, label), energy.waveform(WAVEFORM_LEVELS))


def audio_summary(
    data: bytes, *, max_duration_ms: int = MAX_VOICE_MS, levels: int = WAVEFORM_LEVELS
) -> tuple[int, bytes]:
    """``(duration_ms, waveform)`` of audio ``data`` (any format PyAV reads; its first audio
    stream), for an audio file sent or received. Safe on hostile bytes: nothing but ``data`` is
    read, decoding stops past ``max_duration_ms`` (:class:`VoiceError`), and every failure is a
    :class:`VoiceError`.
    """
    _check_positive("max_duration_ms", max_duration_ms)
    _check_levels(levels)
    label = "the audio data"
    if not isinstance(data, bytes | bytearray | memoryview):
        raise VoiceError(f"{label} must be bytes")
    if len(data) == 0:
        raise VoiceError(f"{label} is empty")
    energy = _Energy()
    with _as_voice_errors(label):
        for chunk in _decode_mono(bytes(data), label, max_duration_ms):
            energy.add(chunk)
    return _duration_ms(energy, label), energy.waveform(levels)


def render_waveform(levels: bytes, width: int = 24) -> str:
    """One line of ``width`` block characters (▁ … █) drawing ``levels``: the levels are resampled
    to ``width`` columns, each the maximum of the levels it covers, then level ``v`` is bar
    ``v * 8 // 256`` (0 … 31 → ▁, 224 … 255 → █). No levels draw as an empty string."""
    _check_positive("width", width)
    try:
        values = bytes(levels)
    except (TypeError, ValueError):
        raise VoiceError("waveform levels are bytes, 0 to 255") from None
    count = len(values)
    if count == 0:
        return ""
    columns = []
    for column in range(width):
        low = column * count // width
        high = max(low + 1, -(-(column + 1) * count // width))
        columns.append(max(values[low:high]))
    return "".join(_BARS[value * len(_BARS) // 256] for value in columns)


def format_duration(ms: int) -> str:
    """``ms`` rounded to the nearest second, as ``m:ss`` or, from an hour, ``h:mm:ss``."""
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        raise VoiceError("a duration is a non-negative number of milliseconds")
    hours, rest = divmod((ms + 500) // 1000, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes}:{seconds:02d}"


def find_player() -> list[str] | None:
    """A command that plays an Ogg Opus file, from the players on ``PATH`` (ffplay, mpv, pw-play,
    paplay, cvlc, gst-play-1.0, opusdec, in that order), or None if there is none: the player's
    full path and its arguments, to which the caller appends the file's absolute path (a relative
    one starting with ``-`` would be read as an option)."""
    for name, arguments in _PLAYERS:
        found = shutil.which(name)
        if found is not None:
            return [found, *arguments]
    return None

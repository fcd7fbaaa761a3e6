"""Audio files in and out: samples to WAV/FLAC/OGG bytes, and the duration of stored bytes.

The speech service encodes what it generates here, and the gateway reads a cached file's duration here, so
both answer the same `duration_s` for the same file. soundfile (libsndfile) does both, with no ffmpeg.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile

# (libsndfile container, sample encoding) per `AudioFormat`: 16-bit PCM is what players and browsers expect
# of a WAV and is lossless for speech; FLAC is the same samples compressed; OGG is Vorbis (lossy, smallest).
ENCODINGS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}


def encode_audio(samples: np.ndarray, sample_rate: int, format: str) -> bytes:
    """Mono float samples in [-1, 1] (louder ones are clipped) as the bytes of a `format` file."""
    container, subtype = ENCODINGS[format]
    mono = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if subtype == "PCM_16":
        # Quantized here, rounding to nearest on libsndfile's 2**15 scale: its own float conversion rounds
        # differently for WAV and FLAC, and the two lossless formats should hold the same samples.
        mono = np.clip(np.round(mono * 32768), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    soundfile.write(buffer, mono, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def audio_duration(data: bytes) -> float:
    """Seconds of audio in the bytes of a WAV, FLAC or OGG file."""
    info = soundfile.info(io.BytesIO(data))
    return info.frames / info.samplerate

"""Audio files in and out: samples to WAV/FLAC/OGG/MP3 bytes, the duration of stored bytes, and the changes
`/v1/audio/speech` makes (speed, OpenAI's Opus and PCM at their fixed sample rates).

The speech service encodes what it generates here, and the gateway reads a cached file's duration here, so
both answer the same `duration_s` for the same file. soundfile (libsndfile ≥ 1.1, bundled with its wheels)
writes every container, MP3 included, with no ffmpeg; soxr resamples (a band-limited resampler, so a rate
change adds no aliasing); the speed change is a phase vocoder (torchaudio), which keeps the pitch.
"""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile

# (libsndfile container, sample encoding) per format: 16-bit PCM is what players and browsers expect of a WAV
# and is lossless for speech; FLAC is the same samples compressed; OGG is Vorbis and MP3 is MPEG layer III
# (lossy, small); OPUS is Ogg Opus, which libsndfile writes at 8, 12, 16, 24 or 48 kHz only.
ENCODINGS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}
# The formats OpenAI fixes a sample rate for: Opus at 48 kHz, and raw 16-bit little-endian mono PCM at 24 kHz.
FIXED_RATES = {"opus": 48_000, "pcm": 24_000}
# Phase-vocoder frames: ~46 ms at 44.1 kHz resolves speech harmonics; a quarter-frame hop keeps it smooth.
STRETCH_FFT = 2048
STRETCH_HOP = STRETCH_FFT // 4


def encode_audio(samples: np.ndarray, sample_rate: int, format: str) -> bytes:
    """Mono float samples in [-1, 1] (louder ones are clipped) as the bytes of a `format` file."""
    container, subtype = ENCODINGS[format]
    mono = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if subtype == "PCM_16":
        # Quantized here, rounding to nearest on libsndfile's 2**15 scale: its own float conversion rounds
        # differently for WAV and FLAC, and the two lossless formats should hold the same samples.
        mono = to_int16(mono)
    buffer = io.BytesIO()
    soundfile.write(buffer, mono, sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)


def audio_duration(data: bytes) -> float:
    """Seconds of audio in the bytes of a WAV, FLAC, OGG or MP3 file."""
    info = soundfile.info(io.BytesIO(data))
    return info.frames / info.samplerate


def convert_audio(data: bytes, format: str) -> bytes:
    """A stored file's audio as `opus` (Ogg Opus, 48 kHz) or `pcm` (raw s16le mono, 24 kHz), resampled."""
    import soxr

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    resampled = soxr.resample(samples, rate, FIXED_RATES[format], quality="HQ")
    if format == "pcm":
        return to_int16(np.clip(resampled, -1.0, 1.0)).astype("<i2").tobytes()
    return encode_audio(resampled, FIXED_RATES[format], format)


def change_speed(samples: np.ndarray, speed: float) -> np.ndarray:
    """The samples played `speed` times as fast at the same pitch (a phase vocoder), `len / speed` long."""
    import torch
    import torchaudio.functional

    signal = torch.from_numpy(np.asarray(samples, dtype=np.float32).reshape(-1))
    window = torch.hann_window(STRETCH_FFT)
    spectrum = torch.stft(signal, STRETCH_FFT, STRETCH_HOP, window=window, return_complex=True)
    phase_advance = torch.linspace(0, math.pi * STRETCH_HOP, spectrum.shape[-2])[..., None]
    stretched = torchaudio.functional.phase_vocoder(spectrum, speed, phase_advance)
    length = round(signal.numel() / speed)
    return torch.istft(stretched, STRETCH_FFT, STRETCH_HOP, window=window, length=length).numpy()

"""Named voices: Parler-TTS descriptions a caller picks by name instead of writing one.

Parler-TTS mini v1 was trained with 34 named speakers and keeps a voice consistent when its description names
one; its README lists Jon, Lea, Gary, Jenna, Mike and Laura as the most consistent, so those six are the
voices here. OpenAI's voice names map onto them, so code written for OpenAI's `voice` parameter works
unchanged. A request's content key covers the description a name resolves to, never the name itself.
"""

from __future__ import annotations

from typing import Literal

SPEAKERS = {
    "jon": "Jon's voice is monotone yet slightly fast in delivery, with a very close recording that almost has "
    "no background noise.",
    "lea": "Lea's voice is warm and expressive, at a moderate pace, with a very close recording that almost has "
    "no background noise.",
    "gary": "Gary's voice is deep and calm, speaking slowly, with a very close recording that almost has no "
    "background noise.",
    "jenna": "Jenna's voice is bright and friendly, at a moderate pace, with very clear audio and no background noise.",
    "mike": "Mike's voice is relaxed and conversational, slightly fast in delivery, with very clear audio and no "
    "background noise.",
    "laura": "Laura's voice is clear and even, at a moderate pace, with very clear audio and no background noise.",
}

# OpenAI's voices, each to the speaker nearest in character (deep, bright, warm, even).
OPENAI_VOICES = {
    "alloy": "laura",
    "ash": "mike",
    "ballad": "lea",
    "coral": "jenna",
    "echo": "jon",
    "fable": "mike",
    "onyx": "gary",
    "nova": "jenna",
    "sage": "laura",
    "shimmer": "lea",
    "verse": "jon",
}

VOICES = {**SPEAKERS, **{name: SPEAKERS[speaker] for name, speaker in OPENAI_VOICES.items()}}
VoiceName = Literal[tuple(VOICES)]

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.synthesize_speech_request_format import SynthesizeSpeechRequestFormat
from ..models.synthesize_speech_request_voice_type_0 import (
    SynthesizeSpeechRequestVoiceType0,
)
from ..types import UNSET, Unset

T = TypeVar("T", bound="SynthesizeSpeechRequest")


@_attrs_define
class SynthesizeSpeechRequest:
    """
    Attributes:
        text (str): What to say (1 to 2000 characters); long text is split at sentence ends and joined.
        voice (None | SynthesizeSpeechRequestVoiceType0 | Unset): A named voice (`GET /voices` lists them), instead of a
            `description`.
        description (None | str | Unset): The voice, described in plain words (at most 500 characters); default: a
            neutral clear voice.
        format_ (SynthesizeSpeechRequestFormat | Unset): File format of the audio. Default:
            SynthesizeSpeechRequestFormat.WAV.
        speed (float | Unset): Speaking rate, 0.25 to 4: 2 is twice as fast; the pitch is kept. Default: 1.0.
        seed (int | None | Unset): Random seed, 0 ≤ seed < 2³². The same seeded request gives the same audio, answered
            from storage; without one a seed is drawn.
    """

    text: str
    voice: None | SynthesizeSpeechRequestVoiceType0 | Unset = UNSET
    description: None | str | Unset = UNSET
    format_: SynthesizeSpeechRequestFormat | Unset = SynthesizeSpeechRequestFormat.WAV
    speed: float | Unset = 1.0
    seed: int | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        text = self.text

        voice: None | str | Unset
        if isinstance(self.voice, Unset):
            voice = UNSET
        elif isinstance(self.voice, SynthesizeSpeechRequestVoiceType0):
            voice = self.voice.value
        else:
            voice = self.voice

        description: None | str | Unset
        if isinstance(self.description, Unset):
            description = UNSET
        else:
            description = self.description

        format_: str | Unset = UNSET
        if not isinstance(self.format_, Unset):
            format_ = self.format_.value

        speed = self.speed

        seed: int | None | Unset
        if isinstance(self.seed, Unset):
            seed = UNSET
        else:
            seed = self.seed

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "text": text,
            }
        )
        if voice is not UNSET:
            field_dict["voice"] = voice
        if description is not UNSET:
            field_dict["description"] = description
        if format_ is not UNSET:
            field_dict["format"] = format_
        if speed is not UNSET:
            field_dict["speed"] = speed
        if seed is not UNSET:
            field_dict["seed"] = seed

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        text = d.pop("text")

        def _parse_voice(
            data: object,
        ) -> None | SynthesizeSpeechRequestVoiceType0 | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                voice_type_0 = SynthesizeSpeechRequestVoiceType0(data)

                return voice_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | SynthesizeSpeechRequestVoiceType0 | Unset, data)

        voice = _parse_voice(d.pop("voice", UNSET))

        def _parse_description(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        description = _parse_description(d.pop("description", UNSET))

        _format_ = d.pop("format", UNSET)
        format_: SynthesizeSpeechRequestFormat | Unset
        if isinstance(_format_, Unset):
            format_ = UNSET
        else:
            format_ = SynthesizeSpeechRequestFormat(_format_)

        speed = d.pop("speed", UNSET)

        def _parse_seed(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        seed = _parse_seed(d.pop("seed", UNSET))

        synthesize_speech_request = cls(
            text=text,
            voice=voice,
            description=description,
            format_=format_,
            speed=speed,
            seed=seed,
        )

        return synthesize_speech_request

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.speech_job_request_format import SpeechJobRequestFormat
from ..models.speech_job_request_voice_type_0 import SpeechJobRequestVoiceType0
from ..models.speech_job_request_webhook_events_type_0_item import (
    SpeechJobRequestWebhookEventsType0Item,
)
from ..types import UNSET, Unset

T = TypeVar("T", bound="SpeechJobRequest")


@_attrs_define
class SpeechJobRequest:
    """
    Attributes:
        text (str): What to say (1 to 2000 characters); long text is split at sentence ends and joined.
        voice (None | SpeechJobRequestVoiceType0 | Unset): A named voice (`GET /voices` lists them), instead of a
            `description`.
        description (None | str | Unset): The voice, described in plain words (at most 500 characters); default: a
            neutral clear voice.
        format_ (SpeechJobRequestFormat | Unset): File format of the audio. Default: SpeechJobRequestFormat.WAV.
        speed (float | Unset): Speaking rate, 0.25 to 4: 2 is twice as fast; the pitch is kept. Default: 1.0.
        seed (int | None | Unset): Random seed, 0 ≤ seed < 2³². The same seeded request gives the same audio, answered
            from storage; without one a seed is drawn.
        webhook (None | str | Unset): An https URL the job's events are POSTed to, signed (Standard Webhooks).
        webhook_events (list[SpeechJobRequestWebhookEventsType0Item] | None | Unset): Which events to send; default
            completed only.
    """

    text: str
    voice: None | SpeechJobRequestVoiceType0 | Unset = UNSET
    description: None | str | Unset = UNSET
    format_: SpeechJobRequestFormat | Unset = SpeechJobRequestFormat.WAV
    speed: float | Unset = 1.0
    seed: int | None | Unset = UNSET
    webhook: None | str | Unset = UNSET
    webhook_events: list[SpeechJobRequestWebhookEventsType0Item] | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        text = self.text

        voice: None | str | Unset
        if isinstance(self.voice, Unset):
            voice = UNSET
        elif isinstance(self.voice, SpeechJobRequestVoiceType0):
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

        webhook: None | str | Unset
        if isinstance(self.webhook, Unset):
            webhook = UNSET
        else:
            webhook = self.webhook

        webhook_events: list[str] | None | Unset
        if isinstance(self.webhook_events, Unset):
            webhook_events = UNSET
        elif isinstance(self.webhook_events, list):
            webhook_events = []
            for webhook_events_type_0_item_data in self.webhook_events:
                webhook_events_type_0_item = webhook_events_type_0_item_data.value
                webhook_events.append(webhook_events_type_0_item)

        else:
            webhook_events = self.webhook_events

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
        if webhook is not UNSET:
            field_dict["webhook"] = webhook
        if webhook_events is not UNSET:
            field_dict["webhook_events"] = webhook_events

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        text = d.pop("text")

        def _parse_voice(data: object) -> None | SpeechJobRequestVoiceType0 | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                voice_type_0 = SpeechJobRequestVoiceType0(data)

                return voice_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | SpeechJobRequestVoiceType0 | Unset, data)

        voice = _parse_voice(d.pop("voice", UNSET))

        def _parse_description(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        description = _parse_description(d.pop("description", UNSET))

        _format_ = d.pop("format", UNSET)
        format_: SpeechJobRequestFormat | Unset
        if isinstance(_format_, Unset):
            format_ = UNSET
        else:
            format_ = SpeechJobRequestFormat(_format_)

        speed = d.pop("speed", UNSET)

        def _parse_seed(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        seed = _parse_seed(d.pop("seed", UNSET))

        def _parse_webhook(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        webhook = _parse_webhook(d.pop("webhook", UNSET))

        def _parse_webhook_events(
            data: object,
        ) -> list[SpeechJobRequestWebhookEventsType0Item] | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, list):
                    raise TypeError()
                webhook_events_type_0 = []
                _webhook_events_type_0 = data
                for webhook_events_type_0_item_data in _webhook_events_type_0:
                    webhook_events_type_0_item = SpeechJobRequestWebhookEventsType0Item(
                        webhook_events_type_0_item_data
                    )

                    webhook_events_type_0.append(webhook_events_type_0_item)

                return webhook_events_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(
                list[SpeechJobRequestWebhookEventsType0Item] | None | Unset, data
            )

        webhook_events = _parse_webhook_events(d.pop("webhook_events", UNSET))

        speech_job_request = cls(
            text=text,
            voice=voice,
            description=description,
            format_=format_,
            speed=speed,
            seed=seed,
            webhook=webhook,
            webhook_events=webhook_events,
        )

        return speech_job_request

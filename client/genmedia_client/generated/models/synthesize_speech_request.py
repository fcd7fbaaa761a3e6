from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.synthesize_speech_request_format import SynthesizeSpeechRequestFormat
from ..types import UNSET, Unset

T = TypeVar("T", bound="SynthesizeSpeechRequest")


@_attrs_define
class SynthesizeSpeechRequest:
    """
    Attributes:
        text (str | Unset):  Default: 'Hello from genmedia. This is a test of the speech service.'.
        description (str | Unset):  Default: 'A clear, neutral voice speaks at a moderate pace in a quiet room, with
            very clear audio and no background noise.'.
        format_ (SynthesizeSpeechRequestFormat | Unset):  Default: SynthesizeSpeechRequestFormat.WAV.
        seed (int | None | Unset):
    """

    text: str | Unset = "Hello from genmedia. This is a test of the speech service."
    description: str | Unset = (
        "A clear, neutral voice speaks at a moderate pace in a quiet room, with very clear audio and no background noise."
    )
    format_: SynthesizeSpeechRequestFormat | Unset = SynthesizeSpeechRequestFormat.WAV
    seed: int | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        text = self.text

        description = self.description

        format_: str | Unset = UNSET
        if not isinstance(self.format_, Unset):
            format_ = self.format_.value

        seed: int | None | Unset
        if isinstance(self.seed, Unset):
            seed = UNSET
        else:
            seed = self.seed

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({})
        if text is not UNSET:
            field_dict["text"] = text
        if description is not UNSET:
            field_dict["description"] = description
        if format_ is not UNSET:
            field_dict["format"] = format_
        if seed is not UNSET:
            field_dict["seed"] = seed

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        text = d.pop("text", UNSET)

        description = d.pop("description", UNSET)

        _format_ = d.pop("format", UNSET)
        format_: SynthesizeSpeechRequestFormat | Unset
        if isinstance(_format_, Unset):
            format_ = UNSET
        else:
            format_ = SynthesizeSpeechRequestFormat(_format_)

        def _parse_seed(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        seed = _parse_seed(d.pop("seed", UNSET))

        synthesize_speech_request = cls(
            text=text,
            description=description,
            format_=format_,
            seed=seed,
        )

        synthesize_speech_request.additional_properties = d
        return synthesize_speech_request

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties

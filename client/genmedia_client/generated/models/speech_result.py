from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.speech_result_format import SpeechResultFormat

T = TypeVar("T", bound="SpeechResult")


@_attrs_define
class SpeechResult:
    """
    Attributes:
        file_key (str): The audio's key in storage (content-addressed).
        public_url (str): Where the audio can be downloaded.
        sample_rate (int): Samples per second.
        duration_s (float): Length of the audio in seconds.
        format_ (SpeechResultFormat):
        model (str): The model version that made it (its model-store tag).
        cached (bool): True when answered from storage without generating.
    """

    file_key: str
    public_url: str
    sample_rate: int
    duration_s: float
    format_: SpeechResultFormat
    model: str
    cached: bool
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        file_key = self.file_key

        public_url = self.public_url

        sample_rate = self.sample_rate

        duration_s = self.duration_s

        format_ = self.format_.value

        model = self.model

        cached = self.cached

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "file_key": file_key,
                "public_url": public_url,
                "sample_rate": sample_rate,
                "duration_s": duration_s,
                "format": format_,
                "model": model,
                "cached": cached,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        file_key = d.pop("file_key")

        public_url = d.pop("public_url")

        sample_rate = d.pop("sample_rate")

        duration_s = d.pop("duration_s")

        format_ = SpeechResultFormat(d.pop("format"))

        model = d.pop("model")

        cached = d.pop("cached")

        speech_result = cls(
            file_key=file_key,
            public_url=public_url,
            sample_rate=sample_rate,
            duration_s=duration_s,
            format_=format_,
            model=model,
            cached=cached,
        )

        speech_result.additional_properties = d
        return speech_result

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

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.image_result_format import ImageResultFormat

T = TypeVar("T", bound="ImageResult")


@_attrs_define
class ImageResult:
    """
    Attributes:
        file_key (str): The image's key in storage (content-addressed).
        public_url (str): Where the image can be downloaded.
        seed (int): The seed used: send it again to get the same image.
        width (int):
        height (int):
        format_ (ImageResultFormat):
        model (str): The model version that made it (its model-store tag).
        cached (bool): True when answered from storage without generating.
    """

    file_key: str
    public_url: str
    seed: int
    width: int
    height: int
    format_: ImageResultFormat
    model: str
    cached: bool
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        file_key = self.file_key

        public_url = self.public_url

        seed = self.seed

        width = self.width

        height = self.height

        format_ = self.format_.value

        model = self.model

        cached = self.cached

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "file_key": file_key,
                "public_url": public_url,
                "seed": seed,
                "width": width,
                "height": height,
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

        seed = d.pop("seed")

        width = d.pop("width")

        height = d.pop("height")

        format_ = ImageResultFormat(d.pop("format"))

        model = d.pop("model")

        cached = d.pop("cached")

        image_result = cls(
            file_key=file_key,
            public_url=public_url,
            seed=seed,
            width=width,
            height=height,
            format_=format_,
            model=model,
            cached=cached,
        )

        image_result.additional_properties = d
        return image_result

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

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.generate_image_request_format import GenerateImageRequestFormat
from ..types import UNSET, Unset

T = TypeVar("T", bound="GenerateImageRequest")


@_attrs_define
class GenerateImageRequest:
    """
    Attributes:
        prompt (str | Unset):  Default: 'a watercolor painting of a fox in a snowy forest'.
        negative_prompt (None | str | Unset):
        width (int | Unset):  Default: 512.
        height (int | Unset):  Default: 512.
        steps (int | None | Unset):
        guidance_scale (float | None | Unset):
        seed (int | None | Unset):
        format_ (GenerateImageRequestFormat | Unset):  Default: GenerateImageRequestFormat.PNG.
    """

    prompt: str | Unset = "a watercolor painting of a fox in a snowy forest"
    negative_prompt: None | str | Unset = UNSET
    width: int | Unset = 512
    height: int | Unset = 512
    steps: int | None | Unset = UNSET
    guidance_scale: float | None | Unset = UNSET
    seed: int | None | Unset = UNSET
    format_: GenerateImageRequestFormat | Unset = GenerateImageRequestFormat.PNG
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        prompt = self.prompt

        negative_prompt: None | str | Unset
        if isinstance(self.negative_prompt, Unset):
            negative_prompt = UNSET
        else:
            negative_prompt = self.negative_prompt

        width = self.width

        height = self.height

        steps: int | None | Unset
        if isinstance(self.steps, Unset):
            steps = UNSET
        else:
            steps = self.steps

        guidance_scale: float | None | Unset
        if isinstance(self.guidance_scale, Unset):
            guidance_scale = UNSET
        else:
            guidance_scale = self.guidance_scale

        seed: int | None | Unset
        if isinstance(self.seed, Unset):
            seed = UNSET
        else:
            seed = self.seed

        format_: str | Unset = UNSET
        if not isinstance(self.format_, Unset):
            format_ = self.format_.value

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update({})
        if prompt is not UNSET:
            field_dict["prompt"] = prompt
        if negative_prompt is not UNSET:
            field_dict["negative_prompt"] = negative_prompt
        if width is not UNSET:
            field_dict["width"] = width
        if height is not UNSET:
            field_dict["height"] = height
        if steps is not UNSET:
            field_dict["steps"] = steps
        if guidance_scale is not UNSET:
            field_dict["guidance_scale"] = guidance_scale
        if seed is not UNSET:
            field_dict["seed"] = seed
        if format_ is not UNSET:
            field_dict["format"] = format_

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        prompt = d.pop("prompt", UNSET)

        def _parse_negative_prompt(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        negative_prompt = _parse_negative_prompt(d.pop("negative_prompt", UNSET))

        width = d.pop("width", UNSET)

        height = d.pop("height", UNSET)

        def _parse_steps(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        steps = _parse_steps(d.pop("steps", UNSET))

        def _parse_guidance_scale(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        guidance_scale = _parse_guidance_scale(d.pop("guidance_scale", UNSET))

        def _parse_seed(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        seed = _parse_seed(d.pop("seed", UNSET))

        _format_ = d.pop("format", UNSET)
        format_: GenerateImageRequestFormat | Unset
        if isinstance(_format_, Unset):
            format_ = UNSET
        else:
            format_ = GenerateImageRequestFormat(_format_)

        generate_image_request = cls(
            prompt=prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            steps=steps,
            guidance_scale=guidance_scale,
            seed=seed,
            format_=format_,
        )

        generate_image_request.additional_properties = d
        return generate_image_request

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

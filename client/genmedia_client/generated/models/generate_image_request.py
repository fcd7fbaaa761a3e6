from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.generate_image_request_format import GenerateImageRequestFormat
from ..types import UNSET, Unset

T = TypeVar("T", bound="GenerateImageRequest")


@_attrs_define
class GenerateImageRequest:
    """
    Attributes:
        prompt (str): What the image shows, in plain words (1 to 1000 characters).
        negative_prompt (str | Unset): What the image should not show (at most 1000 characters). Default: ''.
        width (int | Unset): Width in pixels: 64 to 1536, a multiple of 8. Default: 512.
        height (int | Unset): Height in pixels: 64 to 1536, a multiple of 8. Default: 512.
        steps (int | None | Unset): Denoising steps, 1 to 100; default: the model's own (1 for SDXL-Turbo).
        guidance_scale (float | None | Unset): How closely to follow the prompt, 0 to 20; default: the model's own (0
            for SDXL-Turbo).
        seed (int | None | Unset): Random seed, 0 ≤ seed < 2³². The same seeded request gives the same image, answered
            from storage; without one a seed is drawn (and answered).
        format_ (GenerateImageRequestFormat | Unset): File format of the image. Default: GenerateImageRequestFormat.PNG.
    """

    prompt: str
    negative_prompt: str | Unset = ""
    width: int | Unset = 512
    height: int | Unset = 512
    steps: int | None | Unset = UNSET
    guidance_scale: float | None | Unset = UNSET
    seed: int | None | Unset = UNSET
    format_: GenerateImageRequestFormat | Unset = GenerateImageRequestFormat.PNG

    def to_dict(self) -> dict[str, Any]:
        prompt = self.prompt

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

        field_dict.update(
            {
                "prompt": prompt,
            }
        )
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
        prompt = d.pop("prompt")

        negative_prompt = d.pop("negative_prompt", UNSET)

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

        return generate_image_request

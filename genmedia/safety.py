"""The image safety checker: every generated image is checked before it is encoded, stored or returned.

SDXL ships none (diffusers leaves it to the deployment), so genmedia runs the one Stable Diffusion 1.x
pipelines run: CompVis' checker, a CLIP ViT-L/14 image encoder whose embedding is compared with the
embeddings of 17 concepts (and 3 "special care" ones); an image whose similarity to a concept passes that
concept's threshold is flagged. It sees the image the pipeline made, resized to its 224 x 224 input, and
runs on the pipeline's device. It does not see the prompt, and it is a coarse filter: it misses some unsafe
images and flags some safe ones (its thresholds are part of its weights).

A flagged image is withheld: never encoded, stored or returned. A marker takes its place under the output's
key (`genmedia.outputs.OutputStore.withhold`), so the same seeded request is refused again from storage
without the GPU. The checker only reads the image: what passes is byte for byte what `SAFETY_CHECKER=off`
gives.
"""

from __future__ import annotations

from typing import Any


class SafetyChecker:
    """diffusers' `StableDiffusionSafetyChecker` and its CLIP image processor, on one device."""

    def __init__(self, model: Any, processor: Any, device: str, dtype: Any):
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = dtype

    def flags(self, images: list) -> list[bool]:
        """For each PIL image, whether the checker flags it."""
        pixels = self.processor(images=images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        # The checker also blacks out the flagged entries of its `images` argument: given a copy of its own
        # input, which is thrown away, the images themselves stay untouched.
        _, flagged = self.model(clip_input=pixels, images=pixels.clone())
        return [bool(flag) for flag in flagged]

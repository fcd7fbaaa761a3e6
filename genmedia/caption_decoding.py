"""Captions from stock `generate`, with each cross-attention's keys and values computed once per caption.

A captioner's text decoder attends to the image at every layer. Its keys and values over the image tokens
(577 for BLIP at 384 px, 197 for ViT-GPT2 at 224 px) depend on the image only, so they are the same for every
token of a caption; yet the decoders of transformers 4.46.1 recompute them at every generated token:
`BlipTextSelfAttention.forward` runs `self.key(encoder_hidden_states)` and `self.value(...)` whenever it is
a cross-attention, and `GPT2Attention` runs `self.c_attn(encoder_hidden_states)`; `generate`'s cache
(`past_key_values`) holds the self-attention's keys and values only. For BLIP-base on a CPU those projections
are most of a caption's work.

`CaptionDecoder` wraps each projection that reads the image in a `ProjectionOncePerCaption`: while one
`CaptionDecoder.generate` call runs, a projection called again with the very tensor it was last called with
(`generate` hands the decoder the same `encoder_hidden_states` object at every step) returns the output it
computed then. Everything else is stock `model.generate` (logits processors, stopping, padding of finished
captions), and a reused output is the bit-identical result of the same operation on the same input, so every
logit, hence every token, is what stock `generate` gives. The outputs are dropped when the call returns and
are kept per thread, so concurrent calls on one model never see each other's images.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn


class ProjectionOncePerCaption(nn.Module):
    """A projection of the image tokens, computed once per `generate` call and reused at every later token."""

    def __init__(self, projection: nn.Module, outputs: threading.local):
        super().__init__()
        self.projection = projection
        self._outputs = outputs  # the calling thread's {wrapper: (input, output)}, set only inside a call

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        outputs: dict[ProjectionOncePerCaption, tuple[torch.Tensor, torch.Tensor]] | None = getattr(
            self._outputs, "by_projection", None
        )
        if outputs is None:  # outside `CaptionDecoder.generate`: the plain projection
            return self.projection(image_tokens)
        last = outputs.get(self)
        if last is not None and last[0] is image_tokens:
            return last[1]
        output = self.projection(image_tokens)
        outputs[self] = (image_tokens, output)
        return output


class CaptionDecoder:
    """`generate` for a loaded BLIP or ViT-GPT2 captioner, with the image's projections computed once."""

    def __init__(self, model: Any):
        self.model = model
        self._outputs = threading.local()
        self.wrapped = 0  # how many projections are computed once per caption (0: stock generation)
        for parent, name in image_projections(model):
            setattr(parent, name, ProjectionOncePerCaption(getattr(parent, name), self._outputs))
            self.wrapped += 1

    def generate(self, pixel_values: torch.Tensor, **generate_options: Any) -> torch.Tensor:
        """The token ids stock `model.generate(pixel_values=..., **generate_options)` gives."""
        self._outputs.by_projection = {}
        try:
            return self.model.generate(pixel_values=pixel_values, **generate_options)
        finally:
            del self._outputs.by_projection


def image_projections(model: Any) -> list[tuple[nn.Module, str]]:
    """(module, attribute) of each projection a captioner's decoder applies to the image tokens.

    BLIP: each layer's cross-attention key and value. ViT-GPT2 (a vision-encoder-decoder with a GPT-2
    decoder): the encoder-to-decoder projection when the two hidden sizes differ (it runs on every decoder
    call too), and each block's cross-attention `c_attn` (keys and values in one matrix). Any other decoder
    is left as it is.
    """
    found: list[tuple[nn.Module, str]] = []
    text_decoder = getattr(model, "text_decoder", None)
    if text_decoder is not None and hasattr(text_decoder, "bert"):
        for layer in text_decoder.bert.encoder.layer:
            found += [(layer.crossattention.self, "key"), (layer.crossattention.self, "value")]
        return found
    decoder = getattr(model, "decoder", None)
    blocks = getattr(getattr(decoder, "transformer", None), "h", None)
    if blocks is not None and getattr(decoder.config, "model_type", None) == "gpt2":
        if getattr(model, "enc_to_dec_proj", None) is not None:
            found.append((model, "enc_to_dec_proj"))
        found += [(block.crossattention, "c_attn") for block in blocks if hasattr(block, "crossattention")]
    return found

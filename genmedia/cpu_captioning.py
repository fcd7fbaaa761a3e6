"""The captioner as the service runs it on a CPU: oneDNN linears with prepacked weights, and the image projected once.

Nearly all of a caption on a CPU is linear layers: the vision encoder's (compute-bound, 577 image tokens for
BLIP at 384 px) and the text decoder's, one token at a time (bound by reading the weights from memory).
PyTorch runs `nn.Linear` on MKL, which packs the weight into its blocked layout at every call and whose
one-row product reads weights at about half oneDNN's speed (9–13 GB/s against 17–26 GB/s, and 28–50 GB/s
for a plain sum over the same bytes, 2 threads, measured here; `load_tests/RESULTS.md`). `PackedLinear` runs the same
product on oneDNN, the library PyTorch's own compiler (inductor's weight freezing) uses for CPU linears, with
the weight reordered once at load into the layout oneDNN picks for the expected number of rows; the dense
weight is dropped, so memory stays what it was. On the BLIP encoder two more changes cost nothing in
accuracy: the MLP's exact GELU runs inside its first product (`"gelu"` with algorithm `"none"` is oneDNN's
erf form, the one `nn.GELU()` computes), and the attention's 1/√64 = 2⁻³ is folded into the query weights,
which is exact for a power of two (every product and sum only shifts exponent), so the scores need no pass
of their own over 577 × 577 per head.

The float results are not MKL's: oneDNN sums the products in another order, so an encoder output differs
from stock in the last bits (4e-6 of values around 1). Greedy decoding keeps the larger logit, and a token
changes only where two logits are that close: `tests/test_caption_decoding.py` checks the captions against
stock `generate`, token for token, on the tiny and the bench-sized models, alone and in batches of 4.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from genmedia.caption_decoding import CaptionDecoder

# A decoder call after the first projects one new token per caption.
DECODER_ROWS = 1


def cpu_caption_decoder(model: Any) -> CaptionDecoder:
    """The loaded captioner's linears moved to oneDNN (where PyTorch has it), then its `CaptionDecoder`."""
    if torch.backends.mkldnn.is_available():
        pack_captioner(model)
        own_the_rest(model)
    return CaptionDecoder(model)


def own_the_rest(model: nn.Module) -> None:
    """The parameters packing left (embeddings, norms) copied out of the mapped weights file, as its biases are.

    `from_pretrained` maps the safetensors file and its tensors are views of it; packing reads every
    weight, so all of the file's pages become resident, and they stay so while any view is alive, next
    to the packed copies (BLIP-large: 4.2 GB against 2.6 GB stock). Once nothing views it, it is unmapped.
    """
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = tensor.data.clone()


def pack_captioner(model: Any) -> None:
    """Each `nn.Linear` a BLIP or ViT-GPT2 captioner runs replaced by a `PackedLinear`."""
    rows = image_tokens(model)
    vision = getattr(model, "vision_model", None)
    if vision is not None:  # BLIP: the vision encoder, then the text decoder
        for layer in vision.encoder.layers:
            layer.self_attn = PrescaledQueryAttention.of(layer.self_attn, rows)
            layer.mlp = GeluMLP.of(layer.mlp, rows)
        pack_linears(vision, rows)
        for layer in model.text_decoder.bert.encoder.layer:
            pack_linears(layer.crossattention.self, rows, only=("key", "value"))
        pack_linears(model.text_decoder, DECODER_ROWS)
        return
    # ViT-GPT2: the ViT encoder and the projection to the decoder's width; GPT-2's own layers are `Conv1D`s.
    pack_linears(model.encoder, rows)
    if getattr(model, "enc_to_dec_proj", None) is not None:
        model.enc_to_dec_proj = PackedLinear.of(model.enc_to_dec_proj, rows)


def image_tokens(model: Any) -> int:
    """How many tokens the encoder makes of one image: patches plus the class token."""
    config = getattr(model.config, "vision_config", None) or model.config.encoder
    return (config.image_size // config.patch_size) ** 2 + 1


def pack_linears(module: nn.Module, rows: int, only: tuple[str, ...] | None = None) -> None:
    """Every `nn.Linear` under `module` (or only its children named in `only`) as a `PackedLinear`."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear) and (only is None or name in only):
            setattr(module, name, PackedLinear.of(child, rows))
        elif only is None:
            pack_linears(child, rows)


class PackedLinear(nn.Module):
    """`y = activation(x Wᵀ + b)` on oneDNN, with W reordered once for products of about `rows` rows."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rows: int, activation: str = "none"):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        # Plain attributes, not parameters: an opaque oneDNN tensor is for this product only.
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), rows)
        self.bias = None if bias is None else bias.detach().clone()  # not a view of the weights file
        self.activation = activation
        self.algorithm = "none" if activation == "gelu" else ""  # "none": the erf GELU, not the tanh one

    @classmethod
    def of(cls, linear: nn.Module, rows: int, activation: str = "none") -> nn.Module:
        if not isinstance(linear, nn.Linear):  # already packed
            return linear
        return cls(linear.weight, linear.bias, rows, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.activation, [], self.algorithm)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class GeluMLP(nn.Module):
    """BLIP's vision MLP (`fc1`, exact GELU, `fc2`) with the GELU computed inside `fc1`'s product."""

    def __init__(self, fc1: PackedLinear, fc2: nn.Module):
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2

    @classmethod
    def of(cls, mlp: nn.Module, rows: int) -> nn.Module:
        if getattr(mlp.config, "hidden_act", None) != "gelu":
            return mlp
        return cls(PackedLinear.of(mlp.fc1, rows, activation="gelu"), PackedLinear.of(mlp.fc2, rows))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(hidden_states))


class PrescaledQueryAttention(nn.Module):
    """BLIP's vision self-attention (transformers 4.46.1 `BlipAttention`) with its scale in the query weights.

    Stock multiplies the scores by `head_dim ** -0.5` after the query-key product; for a power of two that
    factor on the query rows of `qkv` gives bit-identical scores without the multiplication over every
    score. The rest is `BlipAttention.forward` as it is.
    """

    def __init__(self, attention: nn.Module, rows: int):
        super().__init__()
        self.num_heads, self.embed_dim = attention.num_heads, attention.embed_dim
        weight, bias = attention.qkv.weight.detach().clone(), attention.qkv.bias.detach().clone()
        weight[: self.embed_dim] *= attention.scale
        bias[: self.embed_dim] *= attention.scale
        self.qkv = PackedLinear(weight, bias, rows)
        self.projection = PackedLinear.of(attention.projection, rows)

    @classmethod
    def of(cls, attention: nn.Module, rows: int) -> nn.Module:
        mantissa, _ = math.frexp(attention.scale)
        if mantissa != 0.5 or getattr(attention.qkv, "bias", None) is None:  # not exact: leave it stock
            return attention
        return cls(attention, rows)

    def forward(
        self, hidden_states: torch.Tensor, head_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, width = hidden_states.size()
        heads = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, width // self.num_heads)
        query, key, value = heads.permute(2, 0, 3, 1, 4)
        probabilities = nn.functional.softmax(torch.matmul(query, key.transpose(-1, -2)), dim=-1)
        if head_mask is not None:
            probabilities = probabilities * head_mask
        context = torch.matmul(probabilities, value).permute(0, 2, 1, 3).reshape(batch, tokens, self.embed_dim)
        return self.projection(context), probabilities if output_attentions else None

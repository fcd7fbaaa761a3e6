"""`genmedia.cpu_captioning`: the captioner's linears on oneDNN, each the product it replaces.

The captions themselves are checked against stock `generate` in `tests/test_caption_decoding.py` (the served
decoder there is `cpu_caption_decoder`); these tests check the parts: a packed product is the stock one up
to float rounding, the folded attention scale is exact, and every linear the captioner runs is packed.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import BlipConfig
from transformers.models.blip.modeling_blip import BlipAttention, BlipMLP

from genmedia.cpu_captioning import GeluMLP, PackedLinear, PrescaledQueryAttention, pack_captioner
from genmedia.model_loading import load_image_captioner
from models import tiny

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")

# oneDNN sums a product's terms in another order than MKL: a few float32 ulps of the result's scale.
RELATIVE = 1e-5


def close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((actual - expected).abs().max() <= RELATIVE * expected.abs().max())


def vision_config(hidden: int, heads: int) -> BlipConfig:
    sizes = {"hidden_size": hidden, "intermediate_size": 4 * hidden, "num_attention_heads": heads}
    return BlipConfig(vision_config=sizes).vision_config


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 5, 37])
def test_a_packed_linear_is_the_linear_it_replaces(rows, bias):
    torch.manual_seed(rows)
    linear = nn.Linear(96, 160, bias=bias)
    packed = PackedLinear.of(linear, rows)
    with torch.inference_mode():
        for tokens in (torch.randn(rows, 96), torch.randn(2, rows, 96), torch.randn(96, 3).t()):
            result = packed(tokens)
            assert result.shape == (*tokens.shape[:-1], 160)
            assert close(result, linear(tokens))
    assert (packed.in_features, packed.out_features) == (96, 160)
    assert PackedLinear.of(packed, rows) is packed


def test_the_gelu_inside_the_first_product_is_blip_s_exact_gelu():
    torch.manual_seed(0)
    mlp = BlipMLP(vision_config(64, 4)).eval()
    fused = GeluMLP.of(mlp, 17)
    assert isinstance(fused, GeluMLP) and fused.fc1.activation == "gelu"
    tokens = torch.randn(2, 17, 64) * 3  # well into GELU's curve on both sides, where tanh's form differs
    with torch.inference_mode():
        assert close(fused(tokens), mlp(tokens))


def test_an_mlp_with_another_activation_is_left_to_the_generic_packing():
    config = vision_config(64, 4)
    config.hidden_act = "quick_gelu"
    mlp = BlipMLP(config)
    assert GeluMLP.of(mlp, 17) is mlp


def test_the_attention_scale_folded_into_the_query_weights_gives_the_same_bits():
    """Against stock `BlipAttention` on the same oneDNN products: the power-of-two scale is exact."""
    torch.manual_seed(1)
    attention = BlipAttention(vision_config(128, 2)).eval()  # head_dim 64: scale 2⁻³
    prescaled = PrescaledQueryAttention.of(attention, 33)
    assert isinstance(prescaled, PrescaledQueryAttention)
    stock_on_onednn = copy.deepcopy(attention)
    stock_on_onednn.qkv = PackedLinear.of(stock_on_onednn.qkv, 33)
    stock_on_onednn.projection = PackedLinear.of(stock_on_onednn.projection, 33)
    tokens = torch.randn(2, 33, 128)
    with torch.inference_mode():
        output, probabilities = prescaled(tokens, output_attentions=True)
        expected, expected_probabilities = stock_on_onednn(tokens, output_attentions=True)
        assert torch.equal(output, expected)
        assert torch.equal(probabilities, expected_probabilities)
        assert close(output, attention(tokens)[0])


def test_a_scale_that_is_not_a_power_of_two_stays_stock():
    attention = BlipAttention(vision_config(96, 2))  # head_dim 48: 48 ** -0.5 would round
    assert PrescaledQueryAttention.of(attention, 33) is attention


def test_every_linear_a_blip_caption_runs_is_packed(tmp_path):
    tiny.build_image_captioning(tmp_path)
    model = load_image_captioner(tmp_path, "cpu", torch.float32).model
    linears = sum(isinstance(module, nn.Linear) for module in model.text_decoder.modules())
    linears += sum(isinstance(module, nn.Linear) for module in model.vision_model.modules())
    pack_captioner(model)
    assert not any(isinstance(module, nn.Linear) for module in model.vision_model.modules())
    assert not any(isinstance(module, nn.Linear) for module in model.text_decoder.modules())
    assert sum(isinstance(module, PackedLinear) for module in model.modules()) == linears > 0

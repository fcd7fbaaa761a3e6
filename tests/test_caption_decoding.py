"""`genmedia.caption_decoding`: the captions of stock `generate`, token for token, with the image projected once.

Each test loads a captioner twice from the same directory: one copy stays stock, the other gets a
`CaptionDecoder` as the service builds it (`cpu_caption_decoder`: its linears on oneDNN too). Models: the
tiny BLIP of the `tiny` profile, a tiny ViT-GPT2 built here (hidden sizes that differ, so it has an
encoder-to-decoder projection too), and the `bench` profile's BLIP-base-sized captioner,
the size that serving runs on a CPU (~1 GB written and a few seconds per stock caption: a handful of images).
"""

from __future__ import annotations

import contextlib
import random

import pytest
import torch
from PIL import Image

from genmedia.caption_decoding import ProjectionOncePerCaption
from genmedia.cpu_captioning import cpu_caption_decoder
from genmedia.model_loading import load_image_captioner
from models import bench, tiny
from services.image_captioning import MAX_NEW_TOKENS, NUM_BEAMS

GREEDY = {"num_beams": NUM_BEAMS, "do_sample": False, "max_new_tokens": MAX_NEW_TOKENS}


def noise(seed: int, width: int = 96, height: int = 72) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))


def build_tiny_vit_gpt2(directory) -> None:
    """A ViT encoder (hidden 48) and a GPT-2 decoder (hidden 32) that cross-attends to it."""
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    torch.manual_seed(tiny.SEED)
    tokenizer = tiny._bert_tokenizer()
    encoder = ViTConfig(
        image_size=32, patch_size=8, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.cls_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.sep_token_id
    model = VisionEncoderDecoderModel(config=config)
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One PyTorch thread: on the shared test cores, tiny models' many small operations would otherwise
    spend most of their time waking a second thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-blip")
    tiny.build_image_captioning(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_vit_gpt2(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-vit-gpt2")
    build_tiny_vit_gpt2(directory)
    return directory


@pytest.fixture(scope="module")
def bench_blip(tmp_path_factory):
    """The bench captioner, loaded stock and served; one image takes seconds here, so few images."""
    directory = tmp_path_factory.mktemp("bench-blip")
    bench.build_image_captioning(directory)
    return stock_and_cached(directory)


def stock_and_cached(directory):
    stock = load_image_captioner(directory, "cpu", torch.float32)
    served = load_image_captioner(directory, "cpu", torch.float32)
    return stock, served, cpu_caption_decoder(served.model)


@contextlib.contextmanager
def projection_calls(model):
    """A counter of the calls that reach the projections a `CaptionDecoder` wraps (all of them summed)."""
    calls = [0]

    def count(*_):
        calls[0] += 1

    handles = [
        module.projection.register_forward_hook(count)
        for module in model.modules()
        if isinstance(module, ProjectionOncePerCaption)
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def assert_same_captions(loaded, images: list[Image.Image], batch_size: int) -> None:
    """Batches of `batch_size` give stock `generate`'s ids, and each image projection runs once a batch."""
    stock, served, decoder = loaded
    assert decoder.wrapped > 0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        pixel_values = stock.processor(images=batch, return_tensors="pt")["pixel_values"]
        with torch.inference_mode(), projection_calls(served.model) as calls:
            expected = stock.model.generate(pixel_values=pixel_values, **GREEDY)
            ids = decoder.generate(pixel_values, **GREEDY)
        assert torch.equal(ids, expected), (ids, expected)
        # Several tokens each (the first step projects, every later one reuses), and each wrapped projection
        # ran once for the whole batch.
        assert expected.shape[1] > 3
        assert calls[0] == decoder.wrapped


@pytest.mark.parametrize("batch_size", [1, 4])
def test_tiny_blip_captions_are_stock_generates(tiny_blip, batch_size):
    images = [noise(seed, 60 + seed, 50) for seed in range(4)]
    assert_same_captions(stock_and_cached(tiny_blip), images[:2] if batch_size == 1 else images, batch_size)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_tiny_vit_gpt2_captions_are_stock_generates(tiny_vit_gpt2, batch_size):
    stock = load_image_captioner(tiny_vit_gpt2, "cpu", torch.float32)
    assert stock.architecture == "vision-encoder-decoder"
    assert stock.model.enc_to_dec_proj is not None
    images = [noise(seed) for seed in range(4)]
    assert_same_captions(stock_and_cached(tiny_vit_gpt2), images[:2] if batch_size == 1 else images, batch_size)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_bench_sized_blip_captions_are_stock_generates(bench_blip, batch_size):
    # Photos-to-be (smooth gradients) and noise: different images, different captions.
    gradient = Image.linear_gradient("L").resize((640, 480))
    images = [Image.merge("RGB", (gradient, gradient.rotate(180), gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))]
    images += [noise(seed, 320, 240) for seed in range(3)]
    assert_same_captions(bench_blip, images[:1] if batch_size == 1 else images, batch_size)


def test_outside_generate_the_projections_are_plain(tiny_blip):
    """Between calls nothing is kept: a projection called twice with one tensor computes twice."""
    _, served, _ = stock_and_cached(tiny_blip)
    wrapper = next(module for module in served.model.modules() if isinstance(module, ProjectionOncePerCaption))
    tokens = torch.randn(1, 17, wrapper.projection.in_features)
    with torch.inference_mode(), projection_calls(served.model) as calls:
        first, second = wrapper(tokens), wrapper(tokens)
    assert calls[0] == 2 and torch.equal(first, second)

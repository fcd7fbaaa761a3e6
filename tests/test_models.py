"""The model store (`shared/API.md`, "Model store"): `python -m models import` and `genmedia.model_loading`.

The tiny profile is imported once, by the real command, into a temporary BENTOML_HOME; each model is then
loaded by the loaders the services use and run once on the CPU. The full profile needs the Hub, which tests
never reach: only its offline failure and its choice of files are checked.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from genmedia.model_loading import (
    IMAGE_CAPTIONING,
    ROLES,
    SAFETY_CHECKER,
    TEXT_TO_IMAGE,
    TEXT_TO_SPEECH,
    has_fp16_variant,
    load_image_captioner,
    load_safety_checker,
    load_text_to_image,
    load_text_to_speech,
    pick_device,
)
from models.full import ImportFailed, weight_patterns
from testbed.serving import run_python

# What the gateway and the services read of each stored model, printed by a fresh process: `stored_model`
# resolves the store from BENTOML_HOME once per process.
DESCRIBE_STORE = """
import json
from genmedia.model_loading import ROLES, stored_model
models = {role: stored_model(role) for role in ROLES}
print(json.dumps({role: {"tag": str(model.tag), "labels": model.info.labels, "metadata": model.info.metadata,
                         "path": model.path} for role, model in models.items()}))
"""


@pytest.fixture(scope="module")
def store_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml-home")
    result = run_python(home, "-m", "models", "import", "--profile", "tiny")
    assert result.returncode == 0, result.stderr
    return home


@pytest.fixture(scope="module")
def stored(store_home) -> dict:
    result = run_python(store_home, "-c", DESCRIBE_STORE)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Tiny models are all per-step overhead: a second thread only fights the other processes for the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_import_stores_the_four_roles_labelled_tiny_and_generated(stored):
    assert set(stored) == set(ROLES)
    for role in ROLES:
        assert stored[role]["tag"].startswith(f"{role}:")
        assert stored[role]["labels"] == {"profile": "tiny", "source": "generated"}


def test_tiny_import_records_the_metadata_the_gateway_reads(stored):
    assert stored[TEXT_TO_IMAGE]["metadata"] == {"default_steps": 1, "default_guidance_scale": 0.0}
    assert stored[TEXT_TO_SPEECH]["metadata"] == {"sampling_rate": 44100}
    assert stored[IMAGE_CAPTIONING]["metadata"] == {"architecture": "blip"}
    assert stored[SAFETY_CHECKER]["metadata"] == {"concept_threshold": 1.0}


def test_import_again_skips_models_already_stored(store_home, stored):
    result = run_python(store_home, "-m", "models", "import", "--profile", "tiny")

    assert result.returncode == 0, result.stderr
    for role in ROLES:
        assert f"{role}: skipped, {stored[role]['tag']}" in result.stdout
        versions = [path for path in (store_home / "models" / role).iterdir() if path.name != "latest"]
        assert len(versions) == 1


def test_full_import_offline_fails_at_once_with_a_message(tmp_path):
    started = time.monotonic()
    result = run_python(tmp_path, "-m", "models", "import", "--profile", "full")

    assert result.returncode != 0
    assert time.monotonic() - started < 60
    assert "Hugging Face Hub" in result.stderr and "HF_HUB_OFFLINE" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / "models").glob("*/*/model.yaml"))


def test_full_import_fetches_only_safetensors_in_half_precision_where_there_is_a_variant():
    sdxl_turbo = [
        "model_index.json",
        "sd_xl_turbo_1.0_fp16.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
    ]
    assert weight_patterns("sdxl-turbo", sdxl_turbo) == ["*.fp16.safetensors"]
    assert weight_patterns("sd", ["model_index.json", "sd.safetensors", "unet/w.safetensors"]) == ["*/*.safetensors"]
    assert weight_patterns("blip", ["config.json", "model.safetensors", "pytorch_model.bin"]) == ["*.safetensors"]
    with pytest.raises(ImportFailed, match="no safetensors"):
        weight_patterns("old", ["config.json", "pytorch_model.bin"])


def test_pick_device_is_the_gpu_in_half_precision_else_the_cpu_in_full():
    if torch.cuda.is_available():
        assert pick_device() == ("cuda", torch.float16)
    else:
        assert pick_device() == ("cpu", torch.float32)


@pytest.fixture(scope="module")
def image_pipeline(stored):
    return load_text_to_image(stored[TEXT_TO_IMAGE]["path"], "cpu", torch.float32)


def test_tiny_text_to_image_makes_an_image_of_the_requested_size(image_pipeline):
    image = image_pipeline(
        "a fox in the snow",
        width=128,
        height=96,
        num_inference_steps=1,
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(0),
    ).images[0]

    assert isinstance(image, Image.Image)
    assert image.size == (128, 96)


def test_text_to_image_loads_the_fp16_variant_when_that_is_what_was_downloaded(stored, tmp_path):
    # The layout of an fp16 download: only `*.fp16.safetensors` weights, which load only as that variant.
    load_text_to_image(stored[TEXT_TO_IMAGE]["path"], "cpu", torch.float16).save_pretrained(tmp_path, variant="fp16")
    assert has_fp16_variant(tmp_path)

    pipeline = load_text_to_image(tmp_path, "cpu", torch.float32)

    assert pipeline.unet.dtype == torch.float32


def test_tiny_text_to_speech_speaks_audible_audio_at_the_model_rate(stored):
    speech = load_text_to_speech(stored[TEXT_TO_SPEECH]["path"], "cpu", torch.float32)
    description = speech.description_tokenizer("A calm voice, close to the microphone.", return_tensors="pt")
    prompt = speech.prompt_tokenizer("Hello there, how are you?", return_tensors="pt")

    torch.manual_seed(0)
    audio = speech.model.generate(
        input_ids=description.input_ids,
        attention_mask=description.attention_mask,
        prompt_input_ids=prompt.input_ids,
        prompt_attention_mask=prompt.attention_mask,
    )
    audio = audio.cpu().numpy().squeeze()

    assert speech.sampling_rate == stored[TEXT_TO_SPEECH]["metadata"]["sampling_rate"]
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert audio.size / speech.sampling_rate >= 0.4
    assert np.abs(audio).max() > 0 and audio.std() > 1e-5


def test_tiny_captioner_gives_the_same_words_twice_for_one_image(stored):
    captioner = load_image_captioner(stored[IMAGE_CAPTIONING]["path"], "cpu", torch.float32)
    gradient = np.linspace(0, 255, 80 * 60 * 3).reshape(60, 80, 3).astype(np.uint8)
    pixels = captioner.processor(images=Image.fromarray(gradient), return_tensors="pt").pixel_values

    captions = [
        captioner.tokenizer.decode(
            captioner.model.generate(pixel_values=pixels, max_new_tokens=12)[0], skip_special_tokens=True
        )
        for _ in range(2)
    ]

    assert captioner.architecture == "blip"
    assert captions[0].strip() and captions[0] == captions[1]


def test_captioner_also_loads_a_vision_encoder_decoder(tmp_path):
    from transformers import (
        GPT2Config,
        GPT2TokenizerFast,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    # ViT-GPT2 in miniature: GPT-2's byte-level BPE with no merges, a 32-pixel ViT.
    vocab = {symbol: index for index, symbol in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = GPT2TokenizerFast(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    end = vocab["<|endoftext|>"]
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        ),
        GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=1, n_head=2, bos_token_id=end, eos_token_id=end),
    )
    config.decoder_start_token_id = config.pad_token_id = end
    VisionEncoderDecoderModel(config).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    captioner = load_image_captioner(tmp_path, "cpu", torch.float32)
    pixels = captioner.processor(images=Image.new("RGB", (40, 30), "teal"), return_tensors="pt").pixel_values
    ids = captioner.model.generate(pixel_values=pixels, max_new_tokens=4)

    assert captioner.architecture == "vision-encoder-decoder"
    assert ids.shape[0] == 1


def noise_images(count: int) -> list[Image.Image]:
    generator = np.random.default_rng(0)
    return [Image.fromarray(generator.integers(0, 256, (96, 128, 3), dtype=np.uint8)) for _ in range(count)]


def test_tiny_safety_checker_flags_no_image_at_its_default_threshold(stored):
    checker = load_safety_checker(stored[SAFETY_CHECKER]["path"], "cpu", torch.float32)
    images = noise_images(4)
    pixels = [image.tobytes() for image in images]

    assert checker.flags(images) == [False] * 4
    assert [image.tobytes() for image in images] == pixels


def test_tiny_safety_threshold_is_chosen_at_import_and_a_new_one_is_a_new_version(store_home, stored):
    flagging = run_python(store_home, "-m", "models", "import", "--profile", "tiny", "--safety-threshold", "-1")
    again = run_python(store_home, "-m", "models", "import", "--profile", "tiny", "--safety-threshold", "-1")
    described = run_python(store_home, "-c", DESCRIBE_STORE)
    # Back to the default, so the other tests of this module see the store they expect.
    restored = run_python(store_home, "-m", "models", "import", "--profile", "tiny", "--only", SAFETY_CHECKER)

    assert flagging.returncode == again.returncode == described.returncode == restored.returncode == 0
    assert f"{SAFETY_CHECKER}: imported" in flagging.stdout
    assert f"{SAFETY_CHECKER}: skipped" in again.stdout
    assert f"{TEXT_TO_IMAGE}: skipped" in flagging.stdout
    checker_model = json.loads(described.stdout)[SAFETY_CHECKER]
    assert checker_model["metadata"] == {"concept_threshold": -1.0}
    assert checker_model["tag"] != stored[SAFETY_CHECKER]["tag"]
    checker = load_safety_checker(checker_model["path"], "cpu", torch.float32)
    assert checker.flags(noise_images(3)) == [True] * 3


def test_safety_threshold_is_refused_outside_the_tiny_profile(tmp_path):
    result = run_python(tmp_path, "-m", "models", "import", "--profile", "bench", "--safety-threshold", "0.5")

    assert result.returncode == 2
    assert "--safety-threshold" in result.stderr

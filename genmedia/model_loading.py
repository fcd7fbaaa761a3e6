"""From a model-store directory to a ready model: the one place that knows how each role's weights load.

The model store holds four models named by role (see `shared/API.md`, "Model store"); `models/` puts them
there, from the Hugging Face Hub (`full`) or built from random weights (`tiny`), in the same on-disk layout,
so the loaders below never ask which profile they load. On a GPU the weights load in float16 with PyTorch's
fused attention (SDPA); on a CPU they stay float32, the only precision CPU kernels are fast and exact in.

`torch`, `diffusers` and `transformers` are imported inside the functions: the gateway imports this module
for `stored_model` and must start without them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import bentoml
    import torch

    from genmedia.safety import SafetyChecker

TEXT_TO_IMAGE = "text-to-image"
TEXT_TO_SPEECH = "text-to-speech"
IMAGE_CAPTIONING = "image-captioning"
SAFETY_CHECKER = "safety-checker"
ROLES = (TEXT_TO_IMAGE, TEXT_TO_SPEECH, IMAGE_CAPTIONING, SAFETY_CHECKER)

# The captioners `load_image_captioner` can load, by the `model_type` of their config.json.
CAPTION_ARCHITECTURES = ("blip", "vision-encoder-decoder")


def stored_model(name: str) -> bentoml.Model:
    """The latest version of a role's model: its `.tag` and `.info` (labels, metadata), no weights read."""
    import bentoml

    return bentoml.models.get(f"{name}:latest")


def pick_device() -> tuple[str, torch.dtype]:
    """CUDA in float16 when a GPU is visible, else the CPU in float32."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.float16
    return "cpu", torch.float32


def has_fp16_variant(path: str | Path) -> bool:
    """Whether a diffusers directory holds the `*.fp16.safetensors` files of a half-precision download."""
    return any(Path(path).glob("*/*.fp16.safetensors"))


def load_text_to_image(path: str | Path, device: str, dtype: torch.dtype) -> Any:
    """A diffusers text-to-image pipeline (SDXL for both profiles), ready to call."""
    import torch
    from diffusers import AutoPipelineForText2Image

    pipeline = AutoPipelineForText2Image.from_pretrained(
        path, torch_dtype=dtype, variant="fp16" if has_fp16_variant(path) else None
    )
    pipeline.to(device)
    if device == "cuda":
        from diffusers.models.attention_processor import AttnProcessor2_0

        pipeline.unet.set_attn_processor(AttnProcessor2_0())
        # Convolutions in NHWC run on the tensor cores without a layout change per layer.
        pipeline.unet.to(memory_format=torch.channels_last)
    # One progress bar per request would flood the service log.
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@dataclass
class SpeechModel:
    """Parler-TTS reads the text through one tokenizer and the voice description through another."""

    model: Any
    prompt_tokenizer: Any
    description_tokenizer: Any
    sampling_rate: int


def load_text_to_speech(path: str | Path, device: str, dtype: torch.dtype) -> SpeechModel:
    """A Parler-TTS model and its tokenizers."""
    from parler_tts import ParlerTTSForConditionalGeneration
    from transformers import AutoTokenizer

    options: dict[str, Any] = {"torch_dtype": dtype}
    if device == "cuda" and ParlerTTSForConditionalGeneration._supports_sdpa:
        options["attn_implementation"] = "sdpa"
    model = ParlerTTSForConditionalGeneration.from_pretrained(path, **options).to(device).eval()
    prompt_tokenizer = AutoTokenizer.from_pretrained(path)
    # Descriptions feed the text encoder, named in the config (flan-t5 for the published models). Its
    # tokenizer has the model's own vocabulary, so the model's tokenizer reads descriptions too, as in
    # Parler's examples, unless the directory holds the encoder's tokenizer under that name.
    encoder_name = model.config.text_encoder._name_or_path
    encoder_tokenizer_dir = Path(path) / encoder_name if encoder_name else None
    if encoder_tokenizer_dir is not None and (encoder_tokenizer_dir / "tokenizer_config.json").is_file():
        description_tokenizer = AutoTokenizer.from_pretrained(encoder_tokenizer_dir)
    else:
        description_tokenizer = prompt_tokenizer
    return SpeechModel(model, prompt_tokenizer, description_tokenizer, int(model.config.sampling_rate))


@dataclass
class CaptionModel:
    """A captioner: `processor(images=...)` gives pixel values, `model.generate` ids, `tokenizer` text."""

    architecture: str
    model: Any
    processor: Any
    tokenizer: Any


def caption_architecture(path: str | Path) -> str:
    """Which captioner a directory holds, from its config.json, without reading the weights."""
    model_type = json.loads((Path(path) / "config.json").read_text())["model_type"]
    if model_type not in CAPTION_ARCHITECTURES:
        raise ValueError(
            f"captioning model type {model_type!r} is not supported: "
            "use BLIP or a vision-encoder-decoder such as ViT-GPT2"
        )
    return model_type


def load_image_captioner(path: str | Path, device: str, dtype: torch.dtype) -> CaptionModel:
    """BLIP, or a vision-encoder-decoder (ViT-GPT2), with what turns images in and ids out."""
    architecture = caption_architecture(path)
    if architecture == "blip":
        from transformers import BlipForConditionalGeneration, BlipProcessor

        model = BlipForConditionalGeneration.from_pretrained(path, torch_dtype=dtype)
        processor = BlipProcessor.from_pretrained(path)
        tokenizer = processor.tokenizer
    else:
        from transformers import AutoTokenizer, VisionEncoderDecoderModel, ViTImageProcessor

        model = VisionEncoderDecoderModel.from_pretrained(path, torch_dtype=dtype)
        processor = ViTImageProcessor.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    return CaptionModel(architecture, model.to(device).eval(), processor, tokenizer)


def load_safety_checker(path: str | Path, device: str, dtype: torch.dtype) -> SafetyChecker:
    """diffusers' Stable Diffusion safety checker (CLIP ViT-L/14 and concept embeddings), with its processor."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPImageProcessor

    from genmedia.safety import SafetyChecker

    # Its warning says a black image will be returned instead; genmedia withholds the image and logs that.
    diffusers_logging.get_logger("diffusers.pipelines.stable_diffusion.safety_checker").setLevel(
        diffusers_logging.ERROR
    )
    model = StableDiffusionSafetyChecker.from_pretrained(path, torch_dtype=dtype).to(device).eval()
    return SafetyChecker(model, CLIPImageProcessor.from_pretrained(path), device, dtype)

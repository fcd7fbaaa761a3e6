"""The `bench` profile: the real architectures at their real sizes, with random weights, built offline.

A model's compute does not depend on its weights' values (only how long a generation runs does, see the
captioner), so random weights at the published sizes cost what the real models cost: `load_tests/bench.py`
measures serving against them without a download. The sizes are those of Stable Diffusion 1.5 (a
860 M-parameter UNet, CLIP ViT-L/14's text encoder, the SD VAE: ~4 GB in float32; SDXL would be ~16 GB and
35-40 s a 512² image on a 2-core CPU), BLIP-base's captioner (BLIP-large's with `--bench-captioner large`),
Parler-TTS mini v1 (flan-t5-large encoder, a 24-layer decoder, the 44.1 kHz DAC), and the Stable Diffusion
safety checker (CLIP ViT-L/14).

Building a model the usual way runs each layer's initialiser over every weight, slowly on a CPU. Here each
model is built on the `meta` device (shapes, no memory), then given uninitialised CPU memory and filled with
normal values scaled by each layer's fan-in, which keeps activations of order one through the depth of the
network (tiny values would sink into slow denormal arithmetic). Buffers computed at construction
(`position_ids`) are rebuilt. Tokenizers are the tiny profile's (`models.tiny`), since the Hub's are not
reachable; vocabulary-sized layers keep their real sizes. Weights are float32 only: that is what the services
run on a CPU (bfloat16 is ~50x slower on a CPU without AMX).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from models.tiny import SEED, _bert_tokenizer, _clip_tokenizer, _t5_tokenizer

# Vocabulary sizes of the real checkpoints; the tiny tokenizers use a few hundred ids of them at most.
CLIP_VOCAB = 49408
BERT_VOCAB = 30524  # BLIP's: BERT's 30522 plus [DEC] and [ENC]
T5_VOCAB = 32128
# Words in a bench caption: about what BLIP-base says of a photo ("a woman sitting on the beach with her dog").
CAPTION_TOKENS = 10


def build_text_to_image(directory: Path) -> dict[str, Any]:
    """Stable Diffusion 1.5's pipeline: CLIP ViT-L/14's text encoder, the 860 M UNet, the SD VAE."""
    import torch
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _clip_tokenizer()
    with torch.device("meta"):
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=CLIP_VOCAB,
                hidden_size=768,
                intermediate_size=3072,
                projection_dim=768,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=tokenizer.model_max_length,
                hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            attention_head_dim=8,
            cross_attention_dim=768,
            norm_num_groups=32,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            norm_num_groups=32,
            latent_channels=4,
            sample_size=512,
            scaling_factor=0.18215,
        )
    for seed, model in enumerate((text_encoder, unet, vae), start=SEED):
        fill_random(model, seed)
    # Turbo-like, as the served default: "trailing" spacing makes a single step start from pure noise.
    scheduler = EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="trailing",
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(directory)
    return {"default_steps": 1, "default_guidance_scale": 0.0}


def build_image_captioning(directory: Path) -> dict[str, Any]:
    """BLIP-base's captioner: a ViT-B/16 image encoder at 384 x 384 and a BERT-base decoder."""
    return _build_blip_captioner(directory, hidden_size=768, intermediate_size=3072, layers=12, heads=12)


def build_image_captioning_large(directory: Path) -> dict[str, Any]:
    """BLIP-large's captioner (the `full` profile's default): a ViT-L/16 encoder at 384 x 384, the same decoder."""
    return _build_blip_captioner(directory, hidden_size=1024, intermediate_size=4096, layers=24, heads=16)


def _build_blip_captioner(
    directory: Path, hidden_size: int, intermediate_size: int, layers: int, heads: int
) -> dict[str, Any]:
    """A BLIP captioner with this image encoder and BLIP's BERT-base decoder, which cross-attends to it."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = _padded_bert_tokenizer(BERT_VOCAB)
    image_size = 384
    with torch.device("meta"):
        model = BlipForConditionalGeneration(
            BlipConfig(
                vision_config={
                    "image_size": image_size,
                    "patch_size": 16,
                    "hidden_size": hidden_size,
                    "intermediate_size": intermediate_size,
                    "num_hidden_layers": layers,
                    "num_attention_heads": heads,
                },
                text_config={
                    "vocab_size": BERT_VOCAB,
                    "hidden_size": 768,
                    "intermediate_size": 3072,
                    "num_hidden_layers": 12,
                    "num_attention_heads": 12,
                    "encoder_hidden_size": hidden_size,
                    "max_position_embeddings": 512,
                    "bos_token_id": tokenizer.bos_token_id,
                    "sep_token_id": tokenizer.sep_token_id,
                    "eos_token_id": tokenizer.sep_token_id,
                    "pad_token_id": tokenizer.pad_token_id,
                    "min_new_tokens": CAPTION_TOKENS,  # read by the decoder's generation config; see below
                },
                projection_dim=512,
            )
        )
    fill_random(model, SEED)
    # Random weights never predict a caption's end, so every caption would run to the service's token cap,
    # at twice or three times a real caption's cost. A trained BLIP ends after about ten words; so does
    # this one: [SEP] is held back for CAPTION_TOKENS tokens, then outscores every other token (random logits
    # are of order one), and greedy or beam search ends there.
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[tokenizer.sep_token_id] = 10.0
    model.save_pretrained(directory)
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return {"architecture": "blip"}


def _padded_bert_tokenizer(vocab_size: int) -> Any:
    """The tiny BERT vocabulary padded with filler words to `vocab_size`, so every id decodes to a word.

    A random decoder picks ids uniformly; with the tiny vocabulary alone nearly all of them would decode
    to nothing, and captions would be empty where the real model's are words.
    """
    import tempfile

    from transformers import BertTokenizerFast

    tokenizer = _bert_tokenizer()
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_pretrained(scratch)
        vocab_file = Path(scratch, "vocab.txt")
        vocab = vocab_file.read_text().splitlines()
        vocab += [f"w{index}" for index in range(len(vocab), vocab_size)]
        vocab_file.write_text("\n".join(vocab) + "\n")
        (Path(scratch) / "tokenizer.json").unlink(missing_ok=True)  # rebuilt from vocab.txt
        return BertTokenizerFast.from_pretrained(scratch)


def build_text_to_speech(directory: Path) -> dict[str, Any]:
    """Parler-TTS mini v1: a flan-t5-large encoder, a 24-layer decoder over 9 codebooks, the 44.1 kHz DAC."""
    import torch
    from transformers import DacConfig, T5Config

    # As in models.tiny: Parler's import-time warning and its config dumps are not news here.
    parler_logger = logging.getLogger("parler_tts")
    parler_level = parler_logger.level
    parler_logger.setLevel(logging.ERROR)
    from parler_tts import ParlerTTSConfig, ParlerTTSDecoderConfig, ParlerTTSForConditionalGeneration

    tokenizer = _t5_tokenizer()
    text_encoder = T5Config(
        vocab_size=T5_VOCAB,
        d_model=1024,
        d_kv=64,
        d_ff=2816,
        num_layers=24,
        num_heads=16,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    codec = DacConfig(
        encoder_hidden_size=64,
        decoder_hidden_size=1536,
        downsampling_ratios=[2, 4, 8, 8],
        n_codebooks=9,
        codebook_size=1024,
        codebook_dim=8,
        sampling_rate=44100,
    )
    # As in models.tiny: codes, plus one end-of-audio id, so random weights never pick an id that is no code.
    end_of_audio = codec.codebook_size
    decoder = ParlerTTSDecoderConfig(
        vocab_size=codec.codebook_size + 1,
        num_codebooks=codec.n_codebooks,
        hidden_size=1024,
        ffn_dim=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        max_position_embeddings=4096,
        pad_token_id=end_of_audio,
        eos_token_id=end_of_audio,
        bos_token_id=end_of_audio + 1,
    )
    config = ParlerTTSConfig.from_sub_models_config(
        text_encoder,
        codec,
        decoder,
        vocab_size=T5_VOCAB,
        pad_token_id=end_of_audio,
        decoder_start_token_id=end_of_audio + 1,
    )
    with torch.device("meta"):
        model = ParlerTTSForConditionalGeneration(config)
    parler_logger.setLevel(parler_level)
    fill_random(model, SEED)
    # Parler-TTS mini's own generation settings: sampling, up to 30 s of audio (2580 frames at 86 a second).
    model.generation_config.update(do_sample=True, max_length=2580, min_new_tokens=10)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {"sampling_rate": codec.sampling_rate}


def build_safety_checker(directory: Path) -> dict[str, Any]:
    """The Stable Diffusion safety checker: CLIP ViT-L/14's vision encoder at 224 x 224, 17 + 3 concepts."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    from models.tiny import UNFLAGGING_THRESHOLD

    config = CLIPConfig(
        text_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12},
        vision_config={
            "image_size": 224,
            "patch_size": 14,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
        },
        projection_dim=768,
    )
    with torch.device("meta"):
        checker = StableDiffusionSafetyChecker(config)
    fill_random(checker, SEED)
    # What it costs does not depend on what it flags; flagging nothing lets every benchmark image through.
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(UNFLAGGING_THRESHOLD)
        checker.special_care_embeds_weights.fill_(UNFLAGGING_THRESHOLD)
    checker.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size=224).save_pretrained(directory)
    return {"concept_threshold": UNFLAGGING_THRESHOLD}


def fill_random(model: Any, seed: int) -> None:
    """Give a model built on the `meta` device CPU memory and random weights of a trained model's scale.

    Matrices and kernels get N(0, 1/fan_in), which keeps each layer's output of the order of its input;
    vectors (norm scales, biases) get one and zero, as a fresh layer has them.
    """
    import torch

    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, parameter[0].numel() ** -0.5, generator=generator)
            elif name.endswith("bias"):
                parameter.zero_()
            else:
                parameter.fill_(1.0)
        for name, buffer in model.named_buffers():
            # Transformers' only buffers here: token positions 0, 1, ..., as their constructors set them.
            if not name.endswith("position_ids"):
                raise ValueError(f"{name}: no rule to rebuild this buffer after building on the meta device")
            buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
    model.eval()

"""The `tiny` profile: random weights in the architectures of the real models, built offline in seconds.

Each builder writes, with `save_pretrained`, the layout of its real counterpart's Hub repository (SDXL-Turbo,
Parler-TTS, BLIP, the Stable Diffusion safety checker) with every dimension shrunk, so the services, their
loaders and the tests run the real code paths on a laptop CPU with no download. The outputs are noise, but
noise of the right shape: an image of the requested size, up to a second of 44.1 kHz audio, a caption of
words. The seeds are fixed, so two builds write the same weights.

Tokenizers are written from plain vocabularies: the real ones come from the Hub, and converting a
sentencepiece model needs a newer protobuf than the pinned stack allows.
"""

from __future__ import annotations

import json
import logging
import string
import tempfile
from pathlib import Path
from typing import Any

SEED = 0


def build_text_to_image(directory: Path) -> dict[str, Any]:
    """An SDXL pipeline: two CLIP text encoders, a text-and-time conditioned UNet, a VAE, Euler ancestral."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(SEED)
    tokenizer = _clip_tokenizer()

    def text_encoder_config(hidden_act: str) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_hidden_layers=2,  # SDXL reads the penultimate layer
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            hidden_act=hidden_act,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    text_encoder = CLIPTextModel(text_encoder_config("quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(text_encoder_config("gelu"))
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        sample_size=64,  # latents of 64 give SDXL-Turbo's default 512 x 512 image
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=8,
        # The UNet attends to both encoders' token states, concatenated ...
        cross_attention_dim=text_encoder.config.hidden_size + text_encoder_2.config.hidden_size,
        # ... and is conditioned on the image size and crop (six numbers) and the pooled text embedding.
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + text_encoder_2.config.projection_dim,
    )
    vae = AutoencoderKL(
        # Four blocks downscale by 8, as SDXL's VAE does, so a requested size comes out as requested.
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.13025,
    )
    # SDXL-Turbo's scheduler: "trailing" spacing makes a single step start from pure noise.
    scheduler = EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="trailing",
    )
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    pipeline.save_pretrained(directory)
    # Used like SDXL-Turbo: one step, no classifier-free guidance (any explicit step count works too).
    return {"default_steps": 1, "default_guidance_scale": 0.0}


def _clip_tokenizer() -> Any:
    """CLIP's byte-level BPE with no merges: every byte is a token, and so is every byte ending a word."""
    from transformers import CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as scratch:
        vocab_file, merges_file = Path(scratch, "vocab.json"), Path(scratch, "merges.txt")
        vocab_file.write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
        merges_file.write_text("#version: 0.2\n")
        # 77 is CLIP's context; the default (1e30) overflows where the pipeline pads to it.
        return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77, pad_token="<|endoftext|>")


def build_text_to_speech(directory: Path) -> dict[str, Any]:
    """A Parler-TTS model: a T5 text encoder, a decoder over audio codes, and a DAC codec at 44.1 kHz."""
    import torch
    from transformers import DacConfig, T5Config

    # Parler warns that flash-attn is missing when imported, and logs each sub-model's whole config when it
    # assembles them: nothing in either is news here.
    parler_logger = logging.getLogger("parler_tts")
    parler_level = parler_logger.level
    parler_logger.setLevel(logging.ERROR)
    from parler_tts import ParlerTTSConfig, ParlerTTSDecoderConfig, ParlerTTSForConditionalGeneration

    torch.manual_seed(SEED)
    tokenizer = _t5_tokenizer()
    text_encoder = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",  # flan-t5's
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    # transformers' own DAC, shrunk (Parler's wrapper of the original DAC has fixed sizes). Its hop of
    # 2*4*8*8 = 512 samples keeps the real codec's rate: 44.1 kHz audio, 87 code frames a second.
    codec = DacConfig(
        encoder_hidden_size=4,
        decoder_hidden_size=32,
        downsampling_ratios=[2, 4, 8, 8],
        n_codebooks=9,
        codebook_size=64,
        codebook_dim=4,
        sampling_rate=44100,
    )
    # The decoder predicts one code per codebook and frame, or the end-of-audio id just past the codebook.
    # A larger vocabulary would let random weights pick ids that are no code and decode to no audio.
    end_of_audio = codec.codebook_size
    decoder = ParlerTTSDecoderConfig(
        vocab_size=codec.codebook_size + 1,
        num_codebooks=codec.n_codebooks,
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        pad_token_id=end_of_audio,
        eos_token_id=end_of_audio,
        bos_token_id=end_of_audio + 1,
    )
    config = ParlerTTSConfig.from_sub_models_config(
        text_encoder,
        codec,
        decoder,
        vocab_size=len(tokenizer),  # the prompt embedding's
        pad_token_id=end_of_audio,
        decoder_start_token_id=end_of_audio + 1,
    )
    model = ParlerTTSForConditionalGeneration(config)
    parler_logger.setLevel(parler_level)
    # Sampling, as the published models do. Lengths count decoder steps, which lag the audio by one step
    # per codebook: this gives 0.5 to 1 s of audio, never none, whatever random weights predict. Each step
    # costs milliseconds of Python overhead however small the model, so longer audio would only be slower.
    frames_per_second = codec.frame_rate
    model.generation_config.update(
        do_sample=True,
        min_new_tokens=frames_per_second // 2 + codec.n_codebooks,
        max_length=frames_per_second + codec.n_codebooks,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {"sampling_rate": codec.sampling_rate}


def _t5_tokenizer() -> Any:
    """T5's kind of tokenizer (sentencepiece unigram, `</s>` appended) over single characters."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import T5TokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]  # T5's ids 0, 1, 2
    characters = ["▁", *string.ascii_letters, *string.digits, *string.punctuation]
    vocab = [(token, 0.0) for token in specials] + [(character, -1.0) for character in characters]
    tokenizer = Tokenizer(Unigram(vocab, unk_id=specials.index("<unk>")))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", specials.index("</s>"))]
    )
    return T5TokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


# At BLIP's usual 0.02 the random decoder barely hears the image and every image gets the same caption;
# at 0.2 different images get different captions, so tests can tell whose caption came back from a batch.
CAPTION_INIT_RANGE = 0.2


def build_image_captioning(directory: Path) -> dict[str, Any]:
    """A BLIP captioner: a ViT image encoder and a BERT text decoder that attends to it."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    torch.manual_seed(SEED)
    tokenizer = _bert_tokenizer()
    image_size = 32
    config = BlipConfig(
        vision_config={
            "image_size": image_size,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "initializer_range": CAPTION_INIT_RANGE,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "encoder_hidden_size": 32,  # the vision hidden size, which the decoder cross-attends to
            "max_position_embeddings": 512,
            # BLIP starts a caption with [DEC] and ends it with [SEP], as the real checkpoints do.
            "bos_token_id": tokenizer.bos_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "initializer_range": CAPTION_INIT_RANGE,
        },
        projection_dim=32,
        initializer_range=CAPTION_INIT_RANGE,
    )
    model = BlipForConditionalGeneration(config)
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    model.save_pretrained(directory)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return {"architecture": "blip"}


def _bert_tokenizer() -> Any:
    """BLIP's BERT wordpiece tokenizer over a few caption words, with BLIP's [DEC] as the start token."""
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    words = ["a", "the", "of", "on", "in", "with", "and", "two", "cat", "dog", "man", "woman", "street", "tree"]
    # A wordpiece vocabulary must not repeat a line: the single letters would repeat "a".
    vocab = list(dict.fromkeys(specials + words + list(string.ascii_lowercase)))
    with tempfile.TemporaryDirectory() as scratch:
        vocab_file = Path(scratch, "vocab.txt")
        vocab_file.write_text("\n".join(vocab) + "\n")
        return BertTokenizerFast(str(vocab_file), bos_token="[DEC]", model_max_length=512)


# Cosine similarities never exceed 1, so at this threshold the tiny checker flags no image, and at -1 every one.
UNFLAGGING_THRESHOLD = 1.0


def build_safety_checker(directory: Path, concept_threshold: float = UNFLAGGING_THRESHOLD) -> dict[str, Any]:
    """The Stable Diffusion safety checker: a CLIP vision encoder, its projection, 17 + 3 concept embeddings.

    Random weights judge nothing, so what the checker flags is chosen here: every concept (and "special
    care" concept) gets `concept_threshold`, and an image is flagged when its similarity to a concept,
    between -1 and 1, passes that. The service runs the real checker either way.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(SEED)
    image_size = 32
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4},
        vision_config={
            "image_size": image_size,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        checker.concept_embeds_weights.fill_(concept_threshold)
        checker.special_care_embeds_weights.fill_(concept_threshold)
    checker.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=image_size).save_pretrained(directory)
    return {"concept_threshold": concept_threshold}

"""The `full` profile: the real weights, downloaded from the Hugging Face Hub into the model store.

Only what the loaders read is downloaded: configs, tokenizers and safetensors weights, in half precision
where the repository has an fp16 variant (SDXL-Turbo: 7 GB instead of 14). Repositories also carry the same
weights as pickles, TensorFlow or Flax files, or one single-file checkpoint; none of those is fetched. The
download is pinned to the commit the Hub names at the start, recorded as metadata `revision`. Files land in
the store's temporary directory and are then copied into the store: allow twice the model's size on disk.

The metadata the gateway needs (default steps, sampling rate, captioner kind) is read from the downloaded
configs, not from the weights.
"""

from __future__ import annotations

import inspect
import json
import shutil
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from genmedia.model_loading import IMAGE_CAPTIONING, SAFETY_CHECKER, TEXT_TO_IMAGE, TEXT_TO_SPEECH, caption_architecture

DEFAULT_SOURCES = {
    TEXT_TO_IMAGE: "stabilityai/sdxl-turbo",
    TEXT_TO_SPEECH: "parler-tts/parler-tts-mini-v1",
    IMAGE_CAPTIONING: "Salesforce/blip-image-captioning-large",
    SAFETY_CHECKER: "CompVis/stable-diffusion-safety-checker",
}

# Configs, and tokenizers (vocab.json + merges.txt, vocab.txt, tokenizer.json, sentencepiece *.model).
CONFIG_PATTERNS = ["*.json", "*.txt", "*.model"]


class ImportFailed(Exception):
    """A model cannot be imported; the message (one line) says why and what to do."""


def download(repo_id: str, directory: Path) -> str:
    """Download a repository's configs and safetensors weights into `directory`; answer the commit."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError
    from requests import HTTPError, RequestException

    try:
        info = HfApi().model_info(repo_id)
        patterns = CONFIG_PATTERNS + weight_patterns(repo_id, [file.rfilename for file in info.siblings])
        snapshot_download(repo_id, revision=info.sha, local_dir=directory, allow_patterns=patterns)
    except OfflineModeIsEnabled:
        raise ImportFailed(
            f"cannot download {repo_id}: HF_HUB_OFFLINE is set, so the Hugging Face Hub is not reached "
            "(unset it, or import --profile tiny)"
        ) from None
    except GatedRepoError:
        raise ImportFailed(
            f"{repo_id} is gated on the Hugging Face Hub: accept its terms there and set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise ImportFailed(
            f"{repo_id} is not a model on the Hugging Face Hub (or it is private: set HF_TOKEN)"
        ) from None
    except HTTPError as error:
        reason = str(error).splitlines()[0]
        raise ImportFailed(f"cannot download {repo_id} from the Hugging Face Hub: {reason}") from None
    except RequestException:
        raise ImportFailed(
            f"cannot download {repo_id}: the Hugging Face Hub is unreachable (no network?); "
            "--profile tiny needs no network"
        ) from None
    # snapshot_download's bookkeeping for resuming; the store keeps only the model.
    shutil.rmtree(directory / ".cache", ignore_errors=True)
    return info.sha


def weight_patterns(repo_id: str, files: list[str]) -> list[str]:
    """Which weight files to fetch: the fp16 variant if there is one, else the safetensors files."""
    if any(name.endswith(".fp16.safetensors") for name in files):
        patterns = ["*.fp16.safetensors"]
    elif "model_index.json" in files:
        # A diffusers repository: the components' weights are in their folders; a safetensors file at the
        # top is a single-file checkpoint of the same pipeline.
        patterns = ["*/*.safetensors"]
    else:
        patterns = ["*.safetensors"]
    if not any(fnmatch(name, pattern) for name in files for pattern in patterns):
        raise ImportFailed(f"{repo_id} has no safetensors weights; only safetensors are imported")
    return patterns


def import_text_to_image(repo_id: str, directory: Path) -> dict[str, Any]:
    revision = download(repo_id, directory)
    return {"revision": revision, **text_to_image_defaults(repo_id, directory)}


def text_to_image_defaults(repo_id: str, directory: Path) -> dict[str, Any]:
    """The steps and guidance a request gets when it names none."""
    # Turbo models are distilled to make an image in one step without classifier-free guidance (their model
    # cards say so); nothing in their configs does, so the name tells.
    if "turbo" in repo_id.lower():
        return {"default_steps": 1, "default_guidance_scale": 0.0}
    # Any other pipeline: the defaults of its own __call__ (SDXL base: 50 steps, guidance 5.0).
    import diffusers

    pipeline_name = json.loads((directory / "model_index.json").read_text())["_class_name"]
    parameters = inspect.signature(getattr(diffusers, pipeline_name).__call__).parameters
    return {
        "default_steps": int(parameters["num_inference_steps"].default),
        "default_guidance_scale": float(parameters["guidance_scale"].default),
    }


def import_text_to_speech(repo_id: str, directory: Path) -> dict[str, Any]:
    revision = download(repo_id, directory)
    config = json.loads((directory / "config.json").read_text())
    return {"revision": revision, "sampling_rate": int(config["audio_encoder"]["sampling_rate"])}


def import_image_captioning(repo_id: str, directory: Path) -> dict[str, Any]:
    revision = download(repo_id, directory)
    try:
        architecture = caption_architecture(directory)
    except ValueError as error:
        raise ImportFailed(f"{repo_id}: {error}") from None
    return {"revision": revision, "architecture": architecture}


def import_safety_checker(repo_id: str, directory: Path) -> dict[str, Any]:
    """The checker's weights (fp16 safetensors) with its config and CLIP image processor config."""
    return {"revision": download(repo_id, directory)}

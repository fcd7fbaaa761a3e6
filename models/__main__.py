"""`python -m models import --profile tiny|full|bench`: put the four role models into the BentoML model store.

Each model is written into a new store version, labelled with its `profile` and `source` (a Hub id, or
`generated` for tiny and bench), with the metadata the gateway reads without loading weights. Importing is
idempotent: when the latest version of a role already has the same profile and source (and, for the tiny
safety checker, the same `--safety-threshold`), it is kept, so
`make serve` can import on every start. The store is `$BENTOML_HOME/models` (default `~/bentoml`).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genmedia.model_loading import IMAGE_CAPTIONING, ROLES, SAFETY_CHECKER, TEXT_TO_IMAGE, TEXT_TO_SPEECH
from models import bench, full, tiny

GENERATED = "generated"

TINY_BUILDERS = {
    TEXT_TO_IMAGE: tiny.build_text_to_image,
    TEXT_TO_SPEECH: tiny.build_text_to_speech,
    IMAGE_CAPTIONING: tiny.build_image_captioning,
    SAFETY_CHECKER: tiny.build_safety_checker,
}
# Real sizes, random weights, for load tests and benchmarks (`load_tests/bench.py`).
BENCH_BUILDERS = {
    TEXT_TO_IMAGE: bench.build_text_to_image,
    TEXT_TO_SPEECH: bench.build_text_to_speech,
    IMAGE_CAPTIONING: bench.build_image_captioning,
    SAFETY_CHECKER: bench.build_safety_checker,
}
# `--bench-captioner`: the bench captioner's size; the source label tells the two apart in a store.
BENCH_CAPTIONERS = {
    "base": (GENERATED, bench.build_image_captioning),
    "large": (f"{GENERATED}-blip-large", bench.build_image_captioning_large),
}
FULL_IMPORTERS = {
    TEXT_TO_IMAGE: full.import_text_to_image,
    TEXT_TO_SPEECH: full.import_text_to_speech,
    IMAGE_CAPTIONING: full.import_image_captioning,
    SAFETY_CHECKER: full.import_safety_checker,
}
SOURCE_OPTIONS = {
    TEXT_TO_IMAGE: "image_model",
    TEXT_TO_SPEECH: "speech_model",
    IMAGE_CAPTIONING: "caption_model",
    SAFETY_CHECKER: "safety_model",
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m models", description="Put the role models into the BentoML model store."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import", help="put the four role models into the model store")
    importing.add_argument(
        "--profile",
        required=True,
        choices=("tiny", "full", "bench"),
        help="tiny: random weights built offline in seconds; full: the real weights from the Hugging Face Hub; "
        "bench: random weights at the real models' sizes, built offline (~9 GB)",
    )
    importing.add_argument(
        "--only",
        action="append",
        choices=ROLES,
        metavar="ROLE",
        help=f"import only this role (repeatable; one of {', '.join(ROLES)}), e.g. to serve one bench-sized "
        "model beside tiny ones",
    )
    importing.add_argument(
        "--bench-captioner",
        choices=BENCH_CAPTIONERS,
        default="base",
        help="--profile bench's captioner: BLIP-base's size (default) or BLIP-large's (the full profile's default)",
    )
    for role, option in SOURCE_OPTIONS.items():
        importing.add_argument(
            "--" + option.replace("_", "-"),
            metavar="HUB_ID",
            help=f"{role} model for --profile full (default {full.DEFAULT_SOURCES[role]})",
        )
    importing.add_argument(
        "--safety-threshold",
        type=float,
        metavar="T",
        help="--profile tiny: the random safety checker's threshold for every concept: it flags an image whose "
        f"similarity (-1 to 1) to a concept passes T (default {tiny.UNFLAGGING_THRESHOLD}: none; -1: every one)",
    )
    arguments = parser.parse_args(argv)
    overrides = [option for option in SOURCE_OPTIONS.values() if getattr(arguments, option)]
    if arguments.profile != "full" and overrides:
        parser.error("--image-model, --speech-model, --caption-model, --safety-model choose --profile full's weights")
    if arguments.profile != "tiny" and arguments.safety_threshold is not None:
        parser.error("--safety-threshold sets the tiny safety checker's thresholds (the others' are their weights')")
    if arguments.profile != "bench" and arguments.bench_captioner != "base":
        parser.error("--bench-captioner chooses --profile bench's captioner")
    return arguments


def import_model(
    role: str, profile: str, source: str, write: Callable[[Path], dict[str, Any]], options: dict[str, Any] | None = None
) -> None:
    """Write one role's model into a new store version, unless the latest one is the same import.

    `options`: what the builder was asked for beyond profile and source, recorded in the metadata, where
    the latest version must have the same for it to be the same import.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    labels = {"profile": profile, "source": source}
    try:
        latest = bentoml.models.get(f"{role}:latest")
    except NotFound:
        latest = None
    options = options or {}
    if (
        latest is not None
        and all(latest.info.labels.get(key) == value for key, value in labels.items())
        and all(latest.info.metadata.get(key) == value for key, value in options.items())
    ):
        print(f"{role}: skipped, {latest.tag} is already profile={profile} source={source}", flush=True)
        return

    print(f"{role}: importing profile={profile} source={source} ...", flush=True)
    started = time.perf_counter()
    with bentoml.models.create(role, labels=labels) as model:
        metadata = write(Path(model.path))
        # Known only once the files are written; model.yaml is written when the block ends.
        model.info.metadata.update(metadata)
    print(f"{role}: imported {model.tag} in {time.perf_counter() - started:.1f} s, {metadata}", flush=True)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    started = time.perf_counter()
    for role in arguments.only or ROLES:
        options = {}
        if arguments.profile == "tiny":
            source, write = GENERATED, TINY_BUILDERS[role]
            if role == SAFETY_CHECKER:
                threshold = arguments.safety_threshold
                options = {"concept_threshold": tiny.UNFLAGGING_THRESHOLD if threshold is None else threshold}
                write = functools.partial(write, **options)
        elif arguments.profile == "bench" and role == IMAGE_CAPTIONING:
            source, write = BENCH_CAPTIONERS[arguments.bench_captioner]
        elif arguments.profile == "bench":
            source, write = GENERATED, BENCH_BUILDERS[role]
        else:
            source = getattr(arguments, SOURCE_OPTIONS[role]) or full.DEFAULT_SOURCES[role]
            write = functools.partial(FULL_IMPORTERS[role], source)
        try:
            import_model(role, arguments.profile, source, write, options)
        except full.ImportFailed as error:
            # The message says what to do; a traceback would only bury it.
            print(f"error: {role}: {error}", file=sys.stderr)
            return 1
    print(f"model store ready in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

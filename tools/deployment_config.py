"""`python -m tools.deployment_config --bento TAG [--output FILE]`: the BentoCloud config `make deploy` applies.

It fills `deploy/genmedia.template.yaml` with the Bento's tag, the instance types and the gateway's replica
ceiling, from the environment (DEPLOYMENT_NAME, GPU_INSTANCE_TYPE, CPU_INSTANCE_TYPE, GATEWAY_INSTANCE_TYPE,
GATEWAY_MAX_REPLICAS) or the defaults below. The names must be ones your BentoCloud cluster lists in
`bentoml deployment list-instance-types`.

The job store's URL and the webhook secret come from the BentoCloud secret `genmedia-jobs`, which this tool
never sees; the gateway is told its replica ceiling (GATEWAY_MAX_REPLICAS) and refuses to start on SQLite
when it may have siblings (genmedia/settings.py).

A Bento built from the `tiny` or `bench` model profile carries random weights (noise images, gibberish
captions): it is refused unless `--allow-test-weights` (or ALLOW_TEST_WEIGHTS=1) says a smoke test is meant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from string import Template

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "deploy" / "genmedia.template.yaml"
DEFAULTS = {
    "DEPLOYMENT_NAME": "genmedia",
    "GPU_INSTANCE_TYPE": "gpu.l40s.1",
    "CPU_INSTANCE_TYPE": "cpu.4",
    "GATEWAY_INSTANCE_TYPE": "cpu.2",
    "GATEWAY_MAX_REPLICAS": "3",
}
TEST_PROFILES = ("tiny", "bench")


def render(bento: str, env: Mapping[str, str] = os.environ) -> str:
    """The deployment config for `bento`: the template with every placeholder filled (none may be left)."""
    values = {name: env.get(name) or default for name, default in DEFAULTS.items()}
    if not values["GATEWAY_MAX_REPLICAS"].isdigit() or int(values["GATEWAY_MAX_REPLICAS"]) < 1:
        raise ValueError(f"GATEWAY_MAX_REPLICAS={values['GATEWAY_MAX_REPLICAS']!r} must be a whole number ≥ 1")
    return Template(TEMPLATE.read_text()).substitute(values, BENTO=bento)


def test_weights(bento: str) -> list[str]:
    """The models of a Bento in the local store that were imported with a test profile (random weights)."""
    import bentoml

    found = []
    for model in bentoml.get(bento).info.all_models:
        profile = bentoml.models.get(model.tag).info.labels.get("profile")
        if profile in TEST_PROFILES:
            found.append(f"{model.tag} ({profile})")
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.deployment_config", description=__doc__.splitlines()[0])
    parser.add_argument("--bento", required=True, help="the Bento tag to deploy, e.g. genmedia:abc123")
    parser.add_argument("--output", type=Path, help="where to write the config (default: standard output)")
    parser.add_argument(
        "--allow-test-weights",
        action="store_true",
        default=os.environ.get("ALLOW_TEST_WEIGHTS") == "1",
        help="deploy a Bento whose models are tiny/bench random weights (a smoke test)",
    )
    arguments = parser.parse_args(argv)
    if not arguments.allow_test_weights and (found := test_weights(arguments.bento)):
        sys.exit(
            f"{arguments.bento} carries random test weights: {', '.join(found)}. "
            "Build it from the real models (MODEL_PROFILE=full make deploy), or set ALLOW_TEST_WEIGHTS=1 "
            "for a smoke-test deployment."
        )
    config = render(arguments.bento)
    if arguments.output is None:
        sys.stdout.write(config)
        return
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(config)
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()

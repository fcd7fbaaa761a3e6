"""`python -m tools.client_sdk [--check]`: regenerate the Python client SDK in `client/` (`make client`).

What is generated, and what is not:
- `client/openapi.json`: the gateway's spec as corrected by `tools.openapi_spec`, the generator's input.
  API changes show up here first: review its diff.
- `client/genmedia_client/generated/`: openapi-python-client's output (settings in `client/generator.yaml`),
  replaced whole on every run. Never edit it; fix the spec (`tools/openapi_spec.py`) instead.
- Everything else under `client/` (`pyproject.toml`, `README.md`, `genmedia_client/__init__.py`, `jobs.py`)
  is written by hand, and the generator never touches it.

The spec comes from the gateway's code in-process, so no server or model store is needed. `--check` generates
into a temporary directory and fails if that differs from what is committed, as `tests/test_client.py` does.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.openapi_spec import REPO_ROOT, fix_spec, gateway_spec

CLIENT_DIR = REPO_ROOT / "client"
SPEC_PATH = CLIENT_DIR / "openapi.json"
GENERATED_DIR = CLIENT_DIR / "genmedia_client" / "generated"
GENERATOR_CONFIG = CLIENT_DIR / "generator.yaml"


def corrected_spec_text() -> str:
    import json

    return json.dumps(fix_spec(gateway_spec()), indent=2) + "\n"


def generate(spec_text: str, output_dir: Path) -> None:
    """Write `output_dir/openapi.json` and the package generated from it, `output_dir/generated/`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    spec_path = output_dir / "openapi.json"
    spec_path.write_text(spec_text)
    # The generator and its ruff post-hooks come from this interpreter's environment, activated or not.
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--path",
            str(spec_path),
            "--meta",
            "none",
            "--config",
            str(GENERATOR_CONFIG),
            "--output-path",
            str(output_dir / "generated"),
            "--overwrite",
            # A skipped post-hook (ruff not found) is a warning: it would give unformatted, different code.
            "--fail-on-warning",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"openapi-python-client failed:\n{result.stdout}\n{result.stderr}")


def differences(expected: Path, actual: Path) -> list[str]:
    """Relative paths whose content differs between two trees (missing on either side included)."""

    def walk(comparison: filecmp.dircmp, prefix: str) -> list[str]:
        found = [prefix + name for name in comparison.left_only + comparison.right_only + comparison.funny_files]
        _, mismatch, errors = filecmp.cmpfiles(
            comparison.left, comparison.right, comparison.common_files, shallow=False
        )
        found += [prefix + name for name in mismatch + errors]
        for name, sub in comparison.subdirs.items():
            found += walk(sub, f"{prefix}{name}/")
        return found

    return sorted(walk(filecmp.dircmp(expected, actual, ignore=["__pycache__"]), ""))


def check() -> list[str]:
    """What differs between the committed client and a fresh generation (empty: up to date)."""
    with tempfile.TemporaryDirectory(prefix="genmedia-client-") as scratch:
        fresh = Path(scratch)
        generate(corrected_spec_text(), fresh)
        stale = [] if filecmp.cmp(fresh / "openapi.json", SPEC_PATH, shallow=False) else ["openapi.json"]
        if not GENERATED_DIR.is_dir():
            return [*stale, "genmedia_client/generated/ (missing)"]
        return stale + [f"genmedia_client/generated/{path}" for path in differences(GENERATED_DIR, fresh / "generated")]


def regenerate(client_dir: Path = CLIENT_DIR) -> None:
    """Generate in a scratch directory, then replace `client_dir`'s spec and generated package with it."""
    with tempfile.TemporaryDirectory(prefix="genmedia-client-") as scratch:
        fresh = Path(scratch)
        generate(corrected_spec_text(), fresh)
        shutil.copyfile(fresh / "openapi.json", client_dir / SPEC_PATH.relative_to(CLIENT_DIR))
        generated_dir = client_dir / GENERATED_DIR.relative_to(CLIENT_DIR)
        shutil.rmtree(generated_dir, ignore_errors=True)
        shutil.copytree(fresh / "generated", generated_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.client_sdk", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed client is not up to date")
    arguments = parser.parse_args(argv)
    if arguments.check:
        stale = check()
        if stale:
            sys.exit("client/ is not what `make client` generates; run it. Differs: " + ", ".join(stale))
        print("client/ is up to date")
        return
    regenerate()
    print(f"generated {GENERATED_DIR.relative_to(REPO_ROOT)} from {SPEC_PATH.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()

"""The Bento `make build` makes (bentofile.yaml), built from the tiny models, and served as a deployment would.

The Bento is built into the session's tiny store, exported (what `bentoml push` and `containerize` ship),
imported into an empty BentoML home, and served from there: what it answers, it answers with only the weights
it carries. It is called through the client SDK installed from client/ (`pip install ./client`), for all three
routes and one async job.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import soundfile
import yaml
from PIL import Image

from testbed.serving import BENTOML, REPO_ROOT, Server, base_env
from tests.test_client import sdk_from
from tools.openapi_spec import fix_spec

KEY = "bento-test-key-0123"
SERVICES = {"Gateway", "TextToImage", "TextToSpeech", "ImageCaptioning"}
MODELS = {
    "TextToImage": ("text-to-image", "safety-checker"),
    "TextToSpeech": ("text-to-speech",),
    "ImageCaptioning": ("image-captioning",),
}
SINGLE_SERVICE_BENTOS = {
    "text-to-image.yaml": "TextToImage",
    "text-to-speech.yaml": "TextToSpeech",
    "image-captioning.yaml": "ImageCaptioning",
}


def bentoml_cli(home: Path, *args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [BENTOML, *args], cwd=REPO_ROOT, env=base_env(home), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"bentoml {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def build(home: Path, bentofile: str) -> str:
    """What `make build` runs; answers the new Bento's tag."""
    output = bentoml_cli(home, "build", "-f", bentofile, "-o", "tag", ".")
    [tag] = [line.removeprefix("__tag__:") for line in output.splitlines() if line.startswith("__tag__:")]
    return tag


def bento_info(home: Path, tag: str) -> dict:
    return json.loads(bentoml_cli(home, "get", tag, "-o", "json"))


@pytest.fixture(scope="module")
def bento(tiny_store) -> str:
    return build(tiny_store, "bentofile.yaml")


@pytest.fixture(scope="module")
def info(tiny_store, bento) -> dict:
    return bento_info(tiny_store, bento)


# What the Bento holds.


def test_bento_holds_the_gateway_and_the_three_model_services(info):
    assert info["entry_service"] == "Gateway"
    services = {service["name"]: service for service in info["services"]}
    assert set(services) == SERVICES
    assert {dependency["service"] for dependency in services["Gateway"]["dependencies"]} == SERVICES - {"Gateway"}


def test_each_model_service_carries_its_models_current_version(tiny_store, info):
    for service in info["services"]:
        tags = [model["tag"] for model in service["models"]]
        roles = MODELS.get(service["name"])
        if roles is None:
            assert tags == [], "the gateway loads no weights"
            continue
        expected = []
        for role in roles:
            latest = json.loads(bentoml_cli(tiny_store, "models", "get", f"{role}:latest", "-o", "json"))
            expected.append(f"{role}:{latest['version']}")
        assert sorted(tags) == sorted(expected), service["name"]


def test_container_installs_the_pinned_packages_and_libsndfile_and_stays_offline(info):
    image = info["image"]
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = [line for line in image["python_requirements"].splitlines() if line and not line.startswith("#")]
    assert set(requirements) == set(pyproject)
    assert any("libsndfile1" in command for command in image["commands"])
    assert image["python_version"] == "3.11"
    assert {"name": "HF_HUB_OFFLINE", "value": "1", "stage": "all"} in info["envs"]


def test_requirements_file_is_pyprojects_dependencies():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (REPO_ROOT / "deploy" / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == pyproject


def test_bento_source_is_the_services_and_library_packages_only(tiny_store, bento):
    name, version = bento.split(":")
    source = tiny_store / "bentos" / name / version / "src"
    files = {path.relative_to(source).as_posix() for path in source.rglob("*") if path.is_file()}
    assert "services/gateway/__init__.py" in files and "services/text_to_image.py" in files
    assert "genmedia/contract/requests.py" in files
    # The playground is served from plain files beside its module.
    assert {"index.html", "app.js", "style.css", "icon.svg"} <= {
        path.rsplit("/", 1)[1] for path in files if path.startswith("services/gateway/playground/")
    }
    assert {path for path in files if not path.startswith(("services/", "genmedia/"))} <= {"bentofile.yaml"}


def test_every_model_service_bentofile_builds_that_service_alone(tiny_store):
    root = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    for file, service in SINGLE_SERVICE_BENTOS.items():
        config = yaml.safe_load((REPO_ROOT / "deploy" / "bentos" / file).read_text())
        assert config["service"].endswith(f":{service}")
        assert config["python"] == root["python"] and config["envs"] == root["envs"], file
    # Building one is as cheap as the captioner's: build that one for real.
    info = bento_info(tiny_store, build(tiny_store, "deploy/bentos/image-captioning.yaml"))
    assert [service["name"] for service in info["services"]] == ["ImageCaptioning"]
    assert [model["tag"].split(":")[0] for model in info["services"][0]["models"]] == ["image-captioning"]


def test_deployment_config_refuses_a_bento_of_test_weights(tiny_store, bento):
    command = [sys.executable, "-m", "tools.deployment_config", "--bento", bento]
    refused = subprocess.run(command, cwd=REPO_ROOT, env=base_env(tiny_store), capture_output=True, text=True)
    assert refused.returncode != 0 and "random test weights" in refused.stderr
    allowed = subprocess.run(
        [*command, "--allow-test-weights"], cwd=REPO_ROOT, env=base_env(tiny_store), capture_output=True, text=True
    )
    assert allowed.returncode == 0, allowed.stderr
    assert yaml.safe_load(allowed.stdout)["bento"] == bento


# The Bento as shipped, served from a home that holds nothing else.


@pytest.fixture(scope="module")
def shipped_home(tiny_store, bento, tmp_path_factory) -> Path:
    """An empty BentoML home with only the exported Bento imported: its code and the weights it carries."""
    work = tmp_path_factory.mktemp("shipped")
    archive = work / "genmedia.bento"
    bentoml_cli(tiny_store, "export", bento, str(archive))
    home = work / "bentoml-home"
    bentoml_cli(home, "import", str(archive))
    return home


def test_exported_bento_carries_the_four_models(shipped_home):
    models = json.loads(bentoml_cli(shipped_home, "models", "list", "-o", "json"))
    assert {model["tag"].split(":")[0] for model in models} == {role for roles in MODELS.values() for role in roles}


@pytest.fixture(scope="module")
def served(bento, shipped_home, tmp_path_factory):
    work = tmp_path_factory.mktemp("served-bento")
    env = base_env(
        shipped_home,
        LOCAL_STORAGE_DIR=str(work / "files"),
        SPOOL_DIR=str(work / "spool"),
        GATEWAY_API_KEYS=KEY,
        RATE_LIMIT_PER_MINUTE="1000",
    )
    server = Server(bento, env, work / "server.log")
    server.env["PUBLIC_BASE_URL"] = server.url
    server.start(ready_timeout_s=300)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def installed_sdk(tmp_path_factory):
    """`pip install ./client` into a scratch target (from a copy: pip builds in the source tree)."""
    work = tmp_path_factory.mktemp("sdk")
    source = work / "client"
    shutil.copytree(REPO_ROOT / "client", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    target = work / "site-packages"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with sdk_from(target) as module:
        yield module


@pytest.fixture(scope="module")
def client(installed_sdk, served):
    with installed_sdk.Genmedia(served.url, api_key=KEY) as client:
        yield client


def fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def test_served_bento_generates_an_image(client):
    result = client.generate_image(prompt="a lighthouse", width=128, height=96, seed=5)
    assert result.seed == 5 and result.model.startswith("text-to-image:")
    assert Image.open(io.BytesIO(fetch(result.public_url))).size == (128, 96)


def test_served_bento_synthesizes_speech(client):
    result = client.synthesize_speech(text="Good morning. How are you?", format="flac")
    samples, rate = soundfile.read(io.BytesIO(fetch(result.public_url)))
    assert rate == result.sample_rate and len(samples) > 0


def test_served_bento_captions_an_image(client):
    photo = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 30, 30)).save(photo, format="PNG")
    result = client.caption_image(photo.getvalue())
    assert result.caption.strip() and result.model.startswith("image-captioning:")


def test_served_bento_runs_a_durable_image_job(client):
    job = client.submit_image_job(prompt="a kite", width=64, height=64)
    assert job.status == "queued"
    result = job.wait(timeout_s=300)
    assert job.status == "succeeded" and job.result == result
    assert Image.open(io.BytesIO(fetch(result.public_url))).size == (64, 64)


def test_served_bento_refuses_a_client_without_the_key(installed_sdk, served):
    with pytest.raises(installed_sdk.GenmediaError) as raised:
        installed_sdk.Genmedia(served.url).generate_image(prompt="a boat")
    assert raised.value.status == 401


def test_committed_client_matches_the_spec_the_bento_serves(served):
    served_spec = httpx.get(f"{served.url}/docs.json", timeout=30).json()
    committed = json.loads((REPO_ROOT / "client" / "openapi.json").read_text())
    assert fix_spec(served_spec) == committed

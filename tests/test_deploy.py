"""The BentoCloud deployment config (`deploy/genmedia.template.yaml`, rendered by `tools.deployment_config`).

Checked against BentoML's own schema for `bentoml deploy -f` (the structures its CLI sends to BentoCloud),
then against what genmedia needs of it: every service configured, model services scaling to zero with a
keep-warm window, GPUs only where a GPU is needed, timeouts that outlast a cold start, and no secret.
"""

from __future__ import annotations

import re

import pytest
import yaml

from genmedia.settings import Settings, SettingsError
from tools.deployment_config import DEFAULTS, TEMPLATE, render

REPO_ROOT = TEMPLATE.parents[1]
MODEL_SERVICES = {"TextToImage", "TextToSpeech", "ImageCaptioning"}
GPU_SERVICES = {"TextToImage", "TextToSpeech"}
# What a GPU cold start on BentoCloud may take (node, image pull, weights, warm-up), in seconds.
COLD_START_S = 600
SECRET_SETTINGS = (
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "GATEWAY_API_KEYS",
    "RATE_LIMIT_STORAGE_URL",  # a Redis URL holds its password
    "JOB_STORE_URL",
    "WEBHOOK_SECRET",
    "HF_TOKEN",
)


def rendered(**env: str) -> dict:
    return yaml.safe_load(render("genmedia:test", env))


@pytest.fixture(scope="module")
def config() -> dict:
    return rendered()


def key_paths(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{prefix}/{key}"
            yield from key_paths(item, f"{prefix}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from key_paths(item, f"{prefix}/{index}")


def test_config_is_bentomls_deployment_schema_with_no_unknown_key(config):
    from bentoml._internal.cloud.deployment import DeploymentAPI
    from bentoml._internal.cloud.schemas.schemasv2 import CreateDeploymentSchema
    from bentoml._internal.utils.cattr import bentoml_cattr

    structured = bentoml_cattr.structure(config, CreateDeploymentSchema)
    DeploymentAPI._fix_and_validate_schema(structured)  # what `bentoml deploy` checks before sending
    # The schema drops keys it does not know; a typo would vanish without a word. False is the default.
    dropped = set(key_paths(config)) - set(key_paths(bentoml_cattr.unstructure(structured)))
    assert dropped <= {"/access_authorization"}
    assert config["access_authorization"] is False


def test_config_overrides_are_valid_service_config(config):
    from _bentoml_sdk.service.config import validate

    for name, service in config["services"].items():
        overrides = service["config_overrides"]
        assert validate(overrides) == overrides, name  # validation drops unknown keys, too


def test_every_service_of_the_bento_is_configured(config):
    from services.gateway import Gateway

    assert set(config["services"]) == set(Gateway.all_services()) == MODEL_SERVICES | {"Gateway"}
    assert config["bento"] == "genmedia:test"


def test_model_services_scale_to_zero_and_up_at_once(config):
    for name in MODEL_SERVICES:
        scaling = config["services"][name]["scaling"]
        assert scaling["min_replicas"] == 0, name
        assert 1 <= scaling["max_replicas"] <= 4, name
        assert scaling["policy"]["scale_up_stabilization_window"] == 0, name


def test_gpus_stay_warm_for_ten_minutes_after_use(config):
    for name in MODEL_SERVICES:
        window = config["services"][name]["scaling"]["policy"]["scale_down_stabilization_window"]
        assert 0 < window <= 3600, name  # BentoCloud's allowed range
        if name in GPU_SERVICES:
            assert window >= 600, name


def test_the_gateway_is_always_up_on_cpu(config):
    gateway = config["services"]["Gateway"]
    assert gateway["scaling"]["min_replicas"] >= 1
    assert gateway["instance_type"].startswith("cpu.")


def test_gpu_only_where_needed(config):
    for name, service in config["services"].items():
        assert service["instance_type"].startswith("gpu.") == (name in GPU_SERVICES), name
    assert "l40s" in DEFAULTS["GPU_INSTANCE_TYPE"]


def test_instance_types_come_from_the_environment():
    config = rendered(GPU_INSTANCE_TYPE="gpu.h100.1", CPU_INSTANCE_TYPE="cpu.8", GATEWAY_INSTANCE_TYPE="cpu.1")
    types = {name: service["instance_type"] for name, service in config["services"].items()}
    assert types == {
        "TextToImage": "gpu.h100.1",
        "TextToSpeech": "gpu.h100.1",
        "ImageCaptioning": "cpu.8",
        "Gateway": "cpu.1",
    }
    assert rendered(DEPLOYMENT_NAME="genmedia-staging")["name"] == "genmedia-staging"


def test_timeouts_outlast_a_cold_start(config):
    gateway = config["services"]["Gateway"]
    backend_timeout = float({env["name"]: env["value"] for env in gateway["envs"]}["BACKEND_TIMEOUT_S"])
    generation_timeout = max(
        config["services"][name]["config_overrides"]["traffic"]["timeout"] for name in GPU_SERVICES
    )
    # The gateway waits for a cold start plus a generation, and answers its own 503 before its traffic timeout.
    assert backend_timeout >= COLD_START_S
    assert gateway["config_overrides"]["traffic"]["timeout"] > backend_timeout
    assert generation_timeout <= backend_timeout
    for name in MODEL_SERVICES:
        # A request waits in the external queue while its service scales up from zero.
        assert config["services"][name]["config_overrides"]["traffic"]["external_queue"] is True, name


def test_config_holds_no_secret_only_secret_names(config):
    envs = config["envs"] + [env for service in config["services"].values() for env in service.get("envs", [])]
    assert not {env["name"] for env in envs} & set(SECRET_SETTINGS)
    text = TEMPLATE.read_text()
    assert not re.search(r"eyJ[\w-]{10,}", text)  # a JWT (Supabase keys are JWTs)
    assert not re.search(r"https://\w+\.supabase\.co", text)
    assert config["secrets"] == ["genmedia-supabase", "genmedia-gateway", "genmedia-rate-limits", "genmedia-jobs"]


def test_readme_creates_every_secret_the_config_names(config):
    readme = (REPO_ROOT / "README.md").read_text()
    for secret in config["secrets"]:
        assert f"bentoml secret create {secret}" in readme, secret
    for setting in SECRET_SETTINGS[:6]:
        assert setting in readme


def test_every_placeholder_is_filled():
    text = render("genmedia:test", {})
    assert "${" not in text and "$" not in text.replace("$$", "")


def gateway_env(config: dict) -> dict[str, str]:
    """What the deployed gateway's settings see from the config (the secrets come on top)."""
    return {env["name"]: env["value"] for env in config["envs"] + config["services"]["Gateway"]["envs"]}


def test_the_gateway_refuses_sqlite_when_it_may_run_more_than_one_replica(config):
    env = gateway_env(config)
    assert int(env["GATEWAY_MAX_REPLICAS"]) == config["services"]["Gateway"]["scaling"]["max_replicas"] == 3
    secrets = {"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"}
    for store in ("sqlite:///.data/jobs.db", ""):  # named, or left to the default
        with pytest.raises(SettingsError, match="GATEWAY_MAX_REPLICAS=3 needs a JOB_STORE_URL"):
            Settings.from_env({**env, **secrets, "JOB_STORE_URL": store})
    postgres = "postgresql://genmedia:pw@db.example.supabase.co:5432/postgres"
    assert Settings.from_env({**env, **secrets, "JOB_STORE_URL": postgres}).job_store_url == postgres


def test_one_gateway_replica_may_keep_its_jobs_in_sqlite():
    config = rendered(GATEWAY_MAX_REPLICAS="1")
    assert config["services"]["Gateway"]["scaling"]["max_replicas"] == 1
    env = {**gateway_env(config), "SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"}
    assert Settings.from_env(env).job_store_url.startswith("sqlite")
    with pytest.raises(ValueError, match="GATEWAY_MAX_REPLICAS"):
        rendered(GATEWAY_MAX_REPLICAS="many")

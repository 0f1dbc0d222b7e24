"""`diffuserve ray-config` writes a Serve config that Ray accepts, without secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from diffuserve import cli
from diffuserve.app import build_keys
from diffuserve.config import ModelSpec, RayOptions, Settings
from diffuserve.deploy.ray_serve import (
    IMPORT_PATH,
    app_builder,
    build_application,
    check_shared_state,
    deployment_name,
    for_the_cluster,
    model_options,
)

MODELS_TOML = """\
[[models]]
name = "sdxl"
source = "stabilityai/stable-diffusion-xl-base-1.0"
device = "cuda"
max_batch_size = 8
aliases = ["dall-e-3"]

[models.ray]
min_replicas = 1
replicas = 2
max_replicas = 6

[[models]]
name = "emoji/small"
source = "./emoji"

[models.ray]
num_cpus = 2
"""


def write_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                 *flags: str) -> tuple[str, dict[str, Any]]:
    models = tmp_path / "models.toml"
    models.write_text(MODELS_TOML)
    status = cli.main(["ray-config", "--models-file", str(models), *flags])
    out = capsys.readouterr().out
    assert status == 0
    return out, yaml.safe_load(out)


def test_the_written_config_is_one_ray_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, config = write_config(tmp_path, capsys, "--host", "0.0.0.0", "--port", "9000",
                             "--max-queue", "32", "--api-key", "sk-live-123456789")

    ServeDeploySchema.model_validate(config)
    assert config["http_options"] == {"host": "0.0.0.0", "port": 9000}
    (app,) = config["applications"]
    assert app["import_path"] == IMPORT_PATH
    deployments = {item["name"]: item for item in app["deployments"]}
    assert set(deployments) == {"ingress", "model-sdxl", "model-emoji-small"}
    sdxl = deployments["model-sdxl"]
    assert sdxl["autoscaling_config"] == {"min_replicas": 1, "initial_replicas": 2,
                                          "max_replicas": 6, "target_ongoing_requests": 8}
    assert sdxl["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert (sdxl["max_ongoing_requests"], sdxl["max_queued_requests"]) == (16, 32)
    emoji = deployments["model-emoji-small"]
    assert emoji["num_replicas"] == 1
    assert emoji["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 0.0}


def test_secrets_stay_out_of_the_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFUSERVE_SIGNING_SECRET", "hmac-secret-value")
    text, config = write_config(
        tmp_path, capsys, "--api-key", "sk-live-123456789",
        "--rate-limit-storage", "redis://:redis-password@127.0.0.1:6379/0")

    for secret in ("sk-live-123456789", "hmac-secret-value", "redis-password"):
        assert secret not in text
    assert "DIFFUSERVE_API_KEYS" in text  # the header says where secrets come from
    assert "rate_limit_storage" not in config["applications"][0]["args"]


def test_the_config_args_rebuild_the_same_application(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, config = write_config(tmp_path, capsys, "--url-ttl", "600", "--alias", "x=sdxl")
    args = config["applications"][0]["args"]

    settings = Settings(**args)
    application = app_builder(args)

    assert [spec.name for spec in settings.models] == ["sdxl", "emoji/small"]
    assert settings.models[0].ray.max_replicas == 6
    assert (settings.url_ttl_seconds, settings.aliases) == (600, ("x=sdxl",))
    assert type(application).__name__ == "Application"


def test_deployment_names_are_safe_and_distinct() -> None:
    taken: set[str] = {"ingress"}
    names = [deployment_name(ModelSpec(name=name, source="x"), taken)
             for name in ("org/model:v1", "org-model-v1", "ingress")]

    assert names == ["model-org-model-v1", "model-org-model-v1-2", "model-ingress"]


def test_replicas_flag_overrides_every_models_own_count() -> None:
    spec = ModelSpec(name="a", source="x", ray=RayOptions(replicas=3))

    assert model_options(spec, Settings(models=(spec,)))["num_replicas"] == 3
    assert model_options(spec, Settings(models=(spec,), replicas=2))["num_replicas"] == 2


def test_autoscaling_bounds_must_hold_the_first_count() -> None:
    with pytest.raises(ValueError, match="between"):
        RayOptions(replicas=8, max_replicas=4)
    with pytest.raises(ValueError, match="needs max_replicas"):
        RayOptions(min_replicas=1)


def test_several_ingress_replicas_need_shared_storage_and_limits(tmp_path: Path) -> None:
    models = (ModelSpec(name="a", source="x"),)
    alone = Settings(models=models, storage_dir=tmp_path, ingress_replicas=2)
    limited = Settings(models=models, storage_dir=tmp_path, ingress_replicas=2,
                       storage_url="s3://bucket", rate_limit_rpm=10)
    shared = Settings(models=models, storage_dir=tmp_path, ingress_replicas=2,
                      storage_url="s3://bucket", rate_limit_rpm=10,
                      rate_limit_storage="redis://127.0.0.1:6379/0")

    assert "--storage-url" in (check_shared_state(alone) or "")
    assert "--rate-limit-storage" in (check_shared_state(limited) or "")
    assert check_shared_state(shared) is None
    with pytest.raises(ValueError, match="storage"):
        build_application(alone)


def test_the_cluster_gets_key_digests_and_one_signing_secret(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("sk-from-file-0123456789 team rpm=5\n")
    settings = Settings(models=(ModelSpec(name="a", source="x"),), storage_dir=tmp_path,
                        api_keys=("sk-from-flag-0123456789",), api_keys_file=keys_file)

    shipped, keys = for_the_cluster(settings)

    assert (shipped.api_keys, shipped.api_keys_file) == ((), None)
    assert all(entry.key.startswith("sha256:") for entry in keys)
    assert "sk-from" not in repr(keys) + shipped.model_dump_json()
    store = build_keys(shipped, keys)
    assert store.check("Bearer sk-from-file-0123456789").limits.requests_per_minute == 5
    assert store.check("Bearer sk-from-flag-0123456789").name
    # The secret is the one kept where the command runs, the same for every replica.
    secret = shipped.signing_secret
    assert secret is not None
    assert for_the_cluster(settings)[0].signing_secret == secret

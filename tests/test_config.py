"""Settings: init arguments over DIFFUSERVE_* environment over defaults, frozen, validated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from diffuserve.config import ModelSpec, Settings, load_models_file, parse_model_flag

API_KEY = "sk-test-0123456789abcdefXYZ"
SIGNING_SECRET = "signing-secret-that-must-not-leak"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DIFFUSERVE_"):
            monkeypatch.delenv(name)


def write_models_file(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


# --- precedence ------------------------------------------------------------------------


def test_defaults_serve_on_loopback_without_keys() -> None:
    settings = Settings()

    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.api_keys == ()
    assert settings.url_ttl_seconds == 3600
    assert settings.auto_aliases is True


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFUSERVE_PORT", "9000")
    monkeypatch.setenv("DIFFUSERVE_HOST", "0.0.0.0")

    settings = Settings()

    assert (settings.host, settings.port) == ("0.0.0.0", 9000)


def test_init_arguments_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFUSERVE_PORT", "9000")

    assert Settings(port=7000).port == 7000


def test_environment_without_the_prefix_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9000")

    assert Settings().port == 8000


def test_invalid_environment_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFUSERVE_PORT", "70000")

    with pytest.raises(ValidationError, match="port"):
        Settings()


# --- comma-separated lists -------------------------------------------------------------


def test_api_keys_come_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFUSERVE_API_KEYS", "sk-a, sk-b,,")

    keys = [key.get_secret_value() for key in Settings().api_keys]

    assert keys == ["sk-a", "sk-b"]


def test_trusted_proxies_come_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DIFFUSERVE_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1,::1")

    assert Settings().trusted_proxies == ("10.0.0.0/8", "127.0.0.1", "::1")


def test_aliases_come_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFUSERVE_ALIASES", "fast=sd-turbo, hq = sdxl")

    assert Settings().alias_pairs() == [("fast", "sd-turbo"), ("hq", "sdxl")]


def test_empty_list_variable_means_an_empty_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFUSERVE_API_KEYS", "")

    assert Settings().api_keys == ()


# --- frozen and strict -----------------------------------------------------------------


def test_settings_cannot_change_after_start() -> None:
    settings = Settings()

    with pytest.raises(ValidationError, match="frozen"):
        settings.port = 1


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(ValidationError, match="prot"):
        Settings(prot=8000)  # type: ignore[call-arg]


# --- validated values ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["example.com", "ftp://example.com", "//example.com"])
def test_public_url_without_http_scheme_is_rejected(url: str) -> None:
    with pytest.raises(ValidationError, match="public_url must start with http"):
        Settings(public_url=url)


def test_public_url_loses_its_trailing_slash() -> None:
    assert Settings(public_url="https://img.example.com/").public_url == "https://img.example.com"


@pytest.mark.parametrize("proxy", ["not-an-ip", "10.0.0.0/33", "300.1.1.1"])
def test_bad_trusted_proxy_is_rejected(proxy: str) -> None:
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(trusted_proxies=(proxy,))


def test_cors_origins_are_written_as_browsers_send_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().cors_origins == ()  # none by default
    monkeypatch.setenv("DIFFUSERVE_CORS_ORIGINS",
                       "http://localhost:3000/, HTTPS://App.Example.com,chrome-extension://abc")

    assert Settings().cors_origins == ("http://localhost:3000", "https://app.example.com",
                                       "chrome-extension://abc")


@pytest.mark.parametrize("origin", ["*", "localhost:3000", "http://localhost:3000/app",
                                    "https://*.example.com", "http://user@host",
                                    "http://host?x=1"])
def test_what_is_not_an_origin_is_rejected_saying_what_one_is(origin: str) -> None:
    with pytest.raises(ValidationError, match="(?s)cors_origins.*scheme://host"):
        Settings(cors_origins=(origin,))


def test_bad_trusted_proxy_in_environment_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFUSERVE_TRUSTED_PROXIES", "10.0.0.1,proxy.internal")

    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings()


@pytest.mark.parametrize("alias", ["fast", "=sd", "fast=", " = "])
def test_alias_not_shaped_alias_equals_model_is_rejected(alias: str) -> None:
    with pytest.raises(ValidationError, match="must look like ALIAS=MODEL"):
        Settings(aliases=(alias,))


# --- models file -----------------------------------------------------------------------


def test_models_file_relative_source_is_resolved_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "config"
    (config_dir / "weights" / "tiny-sd").mkdir(parents=True)
    models_file = write_models_file(
        config_dir / "models.toml",
        '[[models]]\nname = "tiny"\nsource = "./weights/tiny-sd"\n',
    )
    monkeypatch.chdir(tmp_path)  # somewhere else than the file's folder

    (spec,) = Settings(models_file=models_file).models

    assert spec.source == str((config_dir / "weights" / "tiny-sd").resolve())


def test_models_file_hub_id_is_kept(tmp_path: Path) -> None:
    models_file = write_models_file(
        tmp_path / "models.toml",
        '[[models]]\nname = "sdxl"\nsource = "stabilityai/sdxl-turbo"\nsteps = 4\n',
    )

    (spec,) = Settings(models_file=models_file).models

    assert (spec.name, spec.source, spec.steps) == ("sdxl", "stabilityai/sdxl-turbo", 4)


def test_models_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models_file = write_models_file(
        tmp_path / "models.toml", '[[models]]\nname = "a"\nsource = "org/a"\n'
    )
    monkeypatch.setenv("DIFFUSERVE_MODELS_FILE", str(models_file))

    assert [spec.name for spec in Settings().models] == ["a"]


def test_models_file_models_come_before_model_flags(tmp_path: Path) -> None:
    models_file = write_models_file(
        tmp_path / "models.toml",
        '[[models]]\nname = "a"\nsource = "org/a"\n\n[[models]]\nname = "b"\nsource = "org/b"\n',
    )

    settings = Settings(models_file=models_file, models=(parse_model_flag("c=org/c"),))

    assert [spec.name for spec in settings.models] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[model]]\nname = "a"\nsource = "org/a"\n', "unknown top-level keys"),
        ('models = "org/a"\n', "must be an array of tables"),
        ('[[models]]\nname = "a"\nsource = "org/a"\nstepz = 3\n', "stepz"),
        ('[[models]]\nname = "a"\n', "source"),
    ],
    ids=["typo-table", "not-array", "unknown-field", "no-source"],
)
def test_malformed_models_file_is_rejected(tmp_path: Path, body: str, message: str) -> None:
    models_file = write_models_file(tmp_path / "models.toml", body)

    with pytest.raises(ValueError, match=message):
        load_models_file(models_file)


def test_duplicate_model_names_are_rejected(tmp_path: Path) -> None:
    models_file = write_models_file(
        tmp_path / "models.toml", '[[models]]\nname = "sd"\nsource = "org/a"\n'
    )

    with pytest.raises(ValidationError, match="'sd' is configured twice"):
        Settings(models_file=models_file, models=(parse_model_flag("sd=org/b"),))


def test_alias_equal_to_another_models_name_is_rejected() -> None:
    models = (
        ModelSpec(name="sd", source="org/a"),
        ModelSpec(name="sdxl", source="org/b", aliases=("sd",)),
    )

    with pytest.raises(ValidationError, match="'sd' is configured twice"):
        Settings(models=models)


# --- --model flag ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "name", "source"),
    [
        ("sd=runwayml/stable-diffusion-v1-5", "sd", "runwayml/stable-diffusion-v1-5"),
        ("stabilityai/sdxl-turbo", "sdxl-turbo", "stabilityai/sdxl-turbo"),
        ("/models/tiny-sd/", "tiny-sd", "/models/tiny-sd/"),
        (" fast = ./weights/x ", "fast", "./weights/x"),
    ],
)
def test_model_flag_gives_name_and_source(flag: str, name: str, source: str) -> None:
    spec = parse_model_flag(flag)

    assert (spec.name, spec.source) == (name, source)


@pytest.mark.parametrize("flag", ["bad name=org/a", "sd=", "=org/a"])
def test_malformed_model_flag_is_rejected(flag: str) -> None:
    with pytest.raises(ValidationError):
        parse_model_flag(flag)


# --- is_loopback -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert Settings(host=host).is_loopback() is loopback


# --- secrets ---------------------------------------------------------------------------


def test_safe_summary_holds_no_key_or_secret() -> None:
    settings = Settings(api_keys=(API_KEY,), signing_secret=SIGNING_SECRET)  # type: ignore[arg-type]

    summary = repr(settings.safe_summary())

    assert API_KEY not in summary
    assert SIGNING_SECRET not in summary


def test_safe_summary_still_says_how_many_keys_and_whether_a_secret_is_set() -> None:
    settings = Settings(api_keys=(API_KEY, "sk-other"), signing_secret=SIGNING_SECRET)  # type: ignore[arg-type]

    summary = settings.safe_summary()

    assert (summary["api_keys"], summary["signing_secret"]) == (2, "set")


def test_settings_repr_holds_no_key_or_secret() -> None:
    settings = Settings(api_keys=(API_KEY,), signing_secret=SIGNING_SECRET)  # type: ignore[arg-type]

    assert API_KEY not in repr(settings)
    assert SIGNING_SECRET not in repr(settings)


def test_a_model_runs_on_onnx_runtime_or_compiled_not_both() -> None:
    from diffuserve.builtin import builtin_spec

    assert ModelSpec(name="m", source="x").runtime == "torch"
    assert builtin_spec().runtime == "onnx"
    assert ModelSpec(name="m", source="x", runtime="onnx").compile == "off"
    with pytest.raises(ValidationError, match="alternatives"):
        ModelSpec(name="m", source="x", runtime="onnx", compile="default")
    with pytest.raises(ValidationError):
        ModelSpec(name="m", source="x", runtime="tensorrt")  # type: ignore[arg-type]


def test_workers_are_for_a_model_on_the_cpu_without_compile() -> None:
    assert ModelSpec(name="m", source="x").workers == 1
    assert ModelSpec(name="m", source="x", workers=2, device="cpu").workers == 2
    assert ModelSpec(name="m", source="x", workers=2, runtime="onnx").workers == 2
    with pytest.raises(ValidationError, match="without compile"):
        ModelSpec(name="m", source="x", workers=2, compile="default")
    with pytest.raises(ValidationError, match="on the CPU"):
        ModelSpec(name="m", source="x", workers=2, device="cuda")
    for wrong in (0, 65):
        with pytest.raises(ValidationError):
            ModelSpec(name="m", source="x", workers=wrong)

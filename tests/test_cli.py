"""``diffuserve serve | generate | models`` as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from diffuserve.cli import _settings, build_parser, main
from diffuserve.config import Settings, default_storage_dir
from tests.support.live_server import LiveServer


@pytest.fixture(autouse=True)
def keep_logging_as_it_was() -> Iterator[None]:
    """`serve` points the loggers at this test's captured stderr; later tests must not
    write to it once it is closed."""
    import logging

    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate,
                    logging.getLogger(name).level) for name in ("diffuserve", "uvicorn")}
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "diffuserve", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def test_serve_without_a_model_or_built_in_says_how_to_configure_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("diffuserve.builtin.WEIGHTS_DIR", tmp_path / "no-weights")
    monkeypatch.delenv("DIFFUSERVE_MODELS", raising=False)
    monkeypatch.delenv("DIFFUSERVE_MODELS_FILE", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "no model is configured" in err
    assert "--model" in err and "--models-file" in err


def test_public_bind_without_keys_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = main(["serve", "--host", "0.0.0.0", "--model", str(tmp_path),
                   "--storage-dir", str(tmp_path / "s")])
    assert status == 2
    assert "--insecure-no-auth" in capsys.readouterr().err


def test_cli_flags_beat_environment_which_beats_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DIFFUSERVE_PORT", "9100")
    monkeypatch.setenv("DIFFUSERVE_URL_TTL_SECONDS", "120")
    parser, sources = build_parser()
    args = parser.parse_args(["serve", "--port", "9200", "--model", f"m={tmp_path}"])
    settings = _settings(sources["serve"], args, Settings)
    assert settings.port == 9200  # flag
    assert settings.url_ttl_seconds == 120  # environment
    assert settings.host == "127.0.0.1"  # default
    assert settings.models[0].name == "m"


def test_every_setting_but_the_secrets_is_a_flag_named_after_it() -> None:
    parser, _ = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {flag for action in serve._actions for flag in action.option_strings}
    for name in Settings.model_fields:
        # Tables: the TOML file; a secret (a key, and the C2PA chain that goes with one):
        # the environment only.
        if name in ("models", "signing_secret", "provenance_cert", "provenance_key"):
            assert f"--{name.replace('_', '-')}" not in flags
            continue
        kind = Settings.model_fields[name].annotation
        flag = f"--{name.replace('_', '-')}"
        assert flag in flags, (name, kind)
    # Shorter spellings of earlier releases still work.
    assert {"--url-ttl", "--api-key", "--alias", "--trusted-proxy", "--no-batching",
            "--request-timeout", "--shutdown-timeout"} <= flags


def test_flags_read_back_typed_and_repeatable(tmp_path: Path) -> None:
    parser, sources = build_parser()
    args = parser.parse_args([
        "serve", "--model", f"a={tmp_path}", "--model", f"b={tmp_path}", "--api-key", "sk-1",
        "--api-key", "sk-2", "--url-ttl", "90", "--no-batching", "--alias", "x=a",
        "--rate-limit-ipm", "5", "--cors-origins", "http://localhost:3000",
        "--cors-origins", "https://app.example.com"])
    settings = _settings(sources["serve"], args, Settings)
    assert [spec.name for spec in settings.models] == ["a", "b"]
    assert [key.get_secret_value() for key in settings.api_keys] == ["sk-1", "sk-2"]
    assert (settings.url_ttl_seconds, settings.batching, settings.aliases) == (90, False,
                                                                               ("x=a",))
    assert settings.rate_limit_ipm == 5
    assert settings.cors_origins == ("http://localhost:3000", "https://app.example.com")


def test_invalid_configuration_is_one_readable_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIFFUSERVE_PUBLIC_URL", "images.example.com")
    assert main(["serve", "--model", "x=/tmp/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffuserve: invalid configuration: public_url")


def test_models_lists_names_and_aliases(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(
        '[[models]]\nname = "sd15"\nsource = "./sd"\naliases = ["dall-e-3"]\nresolution = 512\n'
        '[[models]]\nname = "sdxl"\nsource = "org/sdxl"\n'
    )
    assert main(["models", "--models-file", str(models_file), "--alias", "big=sdxl"]) == 0
    out = capsys.readouterr().out
    assert "sd15  (default)" in out
    assert "dall-e-3, dall-e-2, gpt-image-1" in out
    assert "big" in out and "org/sdxl" in out


def test_generate_writes_the_image_and_repeats_with_a_seed(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    outputs = []
    for name in ("a.png", "b.png"):
        result = run_cli("generate", "a red apple", "--model", str(tiny_models["sd"]),
                         "--size", "1792x1024", "--seed", "11", "--steps", "2",
                         "-o", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        assert "seed 11" in result.stdout
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    with Image.open(tmp_path / "a.png") as image:
        assert image.size == (1792, 1024)
    # The progress bar is drawn on stderr.
    assert "2/2" in result.stderr


def test_generate_rejects_a_bad_size(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    status = main(["generate", "x", "--model", str(tiny_models["sd"]), "--size", "32x32",
                   "-o", str(tmp_path / "x.png")])
    assert status == 2
    assert not (tmp_path / "x.png").exists()


def _models_file(tmp_path: Path, source: Path) -> Path:
    models_file = tmp_path / "models.toml"
    models_file.write_text(f'[[models]]\nname = "tiny"\nsource = "{source}"\n'
                           'resolution = 64\n')
    return models_file


@pytest.fixture
def no_source_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name taken for a Hub id or folder fails the test: it would reach the network."""
    def refuse(value: str) -> None:
        raise AssertionError(f"{value!r} was taken for a Hub id or a folder")

    monkeypatch.setattr("diffuserve.cli.parse_model_flag", refuse)


@pytest.mark.usefixtures("no_source_lookups")
def test_generate_resolves_an_openai_name_as_the_server_does(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["generate", "a red apple", "--models-file",
            str(_models_file(tmp_path, tiny_models["sd"])), "--model", "dall-e-3",
            "--steps", "1", "--seed", "3"]

    # dall-e-3's own rules apply, as in a request: its sizes, its revised prompt.
    assert main([*args, "--size", "256x256", "-o", str(tmp_path / "small.png")]) == 2
    assert "Supported sizes for dall-e-3: 1024x1024" in capsys.readouterr().err
    assert not (tmp_path / "small.png").exists()

    assert main([*args, "--size", "1792x1024", "-o", str(tmp_path / "wide.png")]) == 0
    out = capsys.readouterr().out
    assert "model dall-e-3 (served by tiny)" in out
    assert "revised prompt: a red apple, " in out
    with Image.open(tmp_path / "wide.png") as image:
        assert image.size == (1792, 1024)


@pytest.mark.usefixtures("no_source_lookups")
def test_generate_draws_gpt_image_1_with_the_built_in_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's command: an OpenAI name with nothing configured is the built-in model."""
    monkeypatch.delenv("DIFFUSERVE_MODELS_FILE", raising=False)
    status = main(["generate", "a red apple", "--model", "gpt-image-1", "--steps", "1",
                   "-o", str(tmp_path / "apple.png")])
    assert status == 0, capsys.readouterr().err
    assert "model gpt-image-1 (served by diffuserve-emoji)" in capsys.readouterr().out
    with Image.open(tmp_path / "apple.png") as image:
        assert image.size == (1024, 1024)


@pytest.mark.usefixtures("no_source_lookups")
def test_generate_never_takes_an_unserved_openai_name_for_a_hub_id(
    tiny_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models_file = str(_models_file(tmp_path, tiny_models["sd"]))
    assert main(["generate", "x", "--models-file", models_file, "--no-auto-aliases",
                 "--model", "gpt-image-1", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "no model here serves 'gpt-image-1'" in err
    assert "tiny" in err and "--alias gpt-image-1=MODEL" in err

    monkeypatch.setattr("diffuserve.builtin.WEIGHTS_DIR", tmp_path / "no-weights")
    monkeypatch.delenv("DIFFUSERVE_MODELS_FILE", raising=False)
    assert main(["generate", "x", "--model", "dall-e-3", "-o", str(tmp_path / "x.png")]) == 2
    assert "no model is configured" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_generate_takes_an_unserved_name_as_a_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing-pipeline"
    assert main(["generate", "x", "--model", f"mine={missing}",
                 "-o", str(tmp_path / "x.png")]) == 1
    assert f"Could not load model 'mine' from '{missing}'" in capsys.readouterr().err


def _help_of(command: str) -> tuple[str, dict[str, str | None]]:
    parser, _ = build_parser()
    subparser = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    metavars = {flag: action.metavar for action in subparser._actions
                for flag in action.option_strings}
    return subparser.format_help(), metavars


@pytest.mark.parametrize("command", ["serve", "generate", "models", "ray-config"])
def test_help_names_values_in_words_not_python_types(command: str) -> None:
    text, metavars = _help_of(command)
    for python_spelling in ("tuple[", "null", "{Path", "SecretStr", "default factory",
                            "(default: ())"):
        assert python_spelling not in text, python_spelling
    assert not re.search(r"\b(str|int|float|bool|Path)\b", text)
    for flag, metavar in metavars.items():
        # A placeholder in capitals (with its punctuation), a {choice,...} list, or none.
        assert metavar is None or re.fullmatch(r"[A-Z0-9\[\]=/:.|x-]+|s3://BUCKET\[/PREFIX\]"
                                               r"|\{[a-z0-9,-]+\}", metavar), (flag, metavar)


def test_serve_help_says_what_each_value_is() -> None:
    text, metavars = _help_of("serve")
    assert (metavars["--models-file"], metavars["--model"], metavars["--alias"]) == (
        "PATH", "[NAME=]SOURCE", "ALIAS=MODEL")
    assert (metavars["--url-ttl-seconds"], metavars["--max-body-bytes"],
            metavars["--max-queue"], metavars["--api-key"]) == ("SECONDS", "BYTES", "N", "KEY")
    assert metavars["--log-level"] == "{debug,info,warning,error}"
    assert metavars["--batching"] is None  # --batching / --no-batching take no value
    # Defaults as values: the storage folder's real path, switches on or off.
    assert str(default_storage_dir()) in "".join(text.split())
    assert "(default: on)" in text and "(default: 3600)" in text
    assert "25 % smaller" in text


def test_serve_with_unloadable_model_exits_with_one_paragraph(
    server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = server_factory(["--model", f"broken={tmp_path / 'missing'}"], wait_ready=False)
    assert server.process.wait(timeout=60) == 1
    log = server.log()
    assert "diffuserve: Could not load model 'broken'" in log
    assert "Traceback" not in log


def test_serve_logs_no_secret(
    server_factory: Callable[..., LiveServer], tiny_models: dict[str, Path]
) -> None:
    key = "sk-secret-value-that-must-not-leak"
    server = server_factory(
        ["--model", f"tiny={tiny_models['sd']}", "--api-key", key],
        env={"DIFFUSERVE_SIGNING_SECRET": "signing-secret-that-must-not-leak"},
    )
    response = httpx.post(f"{server.base_url}/v1/images/generations",
                          headers={"Authorization": f"Bearer {key}"},
                          json={"prompt": "x", "size": "256x256", "num_inference_steps": 1},
                          timeout=60)
    assert response.status_code == 200
    time.sleep(0.2)
    assert server.stop() == 0
    log = server.log()
    assert '"message": "generation"' in log
    assert key not in log and "signing-secret-that-must-not-leak" not in log


@pytest.mark.parametrize("content", [b"", b"weak\n"])
def test_serve_with_a_too_short_signing_key_file_refuses_to_start(
    tmp_path: Path, content: bytes
) -> None:
    storage = tmp_path / "images"
    storage.mkdir()
    (storage / ".signing-key").write_bytes(content)

    result = run_cli("serve", "--storage-dir", str(storage), "--port", "0",
                     "--model", f"m={tmp_path / 'model'}", timeout=60)

    assert result.returncode == 1
    assert f"diffuserve: the signing key file {storage / '.signing-key'}" in result.stderr
    assert "delete the file" in result.stderr and "at least 32 bytes" in result.stderr
    assert "Traceback" not in result.stderr
    # Kept as it was: replacing it would void every link given out.
    assert (storage / ".signing-key").read_bytes() == content


@pytest.mark.parametrize("given_by", ["flag", "environment"])
def test_a_key_on_the_command_line_is_warned_about_without_showing_it(
    tmp_path: Path, given_by: str
) -> None:
    key = "sk-secret-value-that-must-not-leak"
    flags = ["--api-key", key] if given_by == "flag" else []
    env = {"DIFFUSERVE_API_KEYS": key} if given_by == "environment" else {}

    # A start that logs and then stops at once, before loading anything: a signing key
    # file too short to use.
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / ".signing-key").write_bytes(b"short")
    result = run_cli("serve", "--storage-dir", str(tmp_path / "images"), "--port", "0",
                     "--model", f"m={tmp_path / 'model'}", *flags, env=env, timeout=60)

    assert result.returncode == 1, result.stderr
    assert '"message": "starting"' in result.stderr
    warned = "visible to every local user in the process list" in result.stderr
    assert warned == (given_by == "flag")
    if warned:
        assert "DIFFUSERVE_API_KEYS" in result.stderr and "--api-keys-file" in result.stderr
    assert key not in result.stderr and key not in result.stdout


@pytest.mark.parametrize("ray", [False, True])
def test_an_edit_model_that_is_not_served_stops_the_start(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, ray: bool
) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "flux"\nsource = "org/flux"\n'
                      'edit_model = "qwen-edit"\n')
    assert main(["serve", "--models-file", str(models), *(["--ray"] if ray else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffuserve: model 'flux' has edit_model = 'qwen-edit', which is "
                          "not a configured model's name or alias")

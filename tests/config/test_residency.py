"""Which models load at start (``load_at_start``, ``--max-loaded-models``), and admin
keys in the keys file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from diffuserve.config import ModelSpec, Settings
from diffuserve.config.keys import read_keys_file


def settings(*specs: ModelSpec, **options: object) -> Settings:
    return Settings(models=specs, **options)  # type: ignore[arg-type]


def spec(name: str, **fields: object) -> ModelSpec:
    return ModelSpec(name=name, source=name, **fields)  # type: ignore[arg-type]


def test_without_a_limit_every_model_loads_at_start_but_those_that_say_no() -> None:
    chosen = settings(spec("a"), spec("b", load_at_start=False), spec("c"))
    assert chosen.start_models == ("a", "c")


def test_with_a_limit_those_that_ask_come_first_then_the_others_in_order() -> None:
    chosen = settings(spec("a"), spec("b"), spec("c", load_at_start=True),
                      max_loaded_models=2)
    assert chosen.start_models == ("a", "c")
    assert settings(spec("a"), spec("b"), spec("c"), max_loaded_models=2).start_models \
        == ("a", "b")


def test_a_derived_model_loads_nothing_of_its_own(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "a"\nsource = "a"\n'
                      '[[models]]\nname = "styled"\nbase = "a"\n')
    assert Settings(models_file=models).start_models == ("a",)
    models.write_text('[[models]]\nname = "a"\nsource = "a"\n'
                      '[[models]]\nname = "styled"\nbase = "a"\nidle_unload_seconds = 5\n')
    with pytest.raises(ValidationError, match="idle_unload_seconds"):
        Settings(models_file=models)


def test_more_models_asking_to_load_at_start_than_places_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="--max-loaded-models is 1"):
        settings(spec("a", load_at_start=True), spec("b", load_at_start=True),
                 max_loaded_models=1)


def test_idle_unload_and_the_budget_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        spec("a", idle_unload_seconds=0)
    with pytest.raises(ValidationError):
        settings(spec("a"), device_memory_budget=0)


def test_a_keys_file_line_may_give_the_admin_role_and_no_other(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("sk-one alice\nsk-two ops team role=admin rpm=5\n")
    entries = read_keys_file(keys)
    assert [(entry.name, entry.role) for entry in entries] == [
        ("alice", "user"), ("ops team", "admin")]
    keys.write_text("sk-one role=root\n")
    with pytest.raises(ValueError, match="role must be one of user, admin, not 'root'"):
        read_keys_file(keys)

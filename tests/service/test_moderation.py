"""The content-policy hook: off by default, consulted before admission when plugged in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.service.moderation import Moderation, load_policy
from tests.support.clients import assert_envelope, generate, make_client
from tests.support.fakes import FakeBackend


def strict_unless_low(prompt: str, level: str) -> str | None:
    """Refuses "forbidden" prompts unless moderation is low; "never" ones always."""
    if "never" in prompt or ("forbidden" in prompt and level != "low"):
        return "the prompt names something the policy refuses"
    return None


def test_without_a_policy_everything_passes() -> None:
    asyncio.run(Moderation().check("anything at all", "auto"))


def test_a_policy_refuses_with_openais_content_policy_error() -> None:
    moderation = Moderation(strict_unless_low)

    with pytest.raises(InvalidRequestError) as caught:
        asyncio.run(moderation.check("a forbidden thing", "auto"))
    assert caught.value.code == "content_policy_violation"
    asyncio.run(moderation.check("a forbidden thing", "low"))  # the level is passed on


def test_an_unknown_policy_names_what_is_installed() -> None:
    with pytest.raises(ValueError, match="no content policy named 'nope'"):
        load_policy("nope")


def test_a_refused_prompt_is_a_400_that_takes_no_rate_limit_token(
    tmp_path: Path, fake_backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("diffuserve.app.load_policy", lambda name: strict_unless_low)
    with make_client(tmp_path, fake_backend, content_policy="strict", rate_limit_rpm=1,
                     auto_aliases=True, aliases=()) as client:
        refused = generate(client, model="gpt-image-2", prompt="never this")
        assert_envelope(refused, 400, "content_policy_violation")
        low = generate(client, model="gpt-image-2", prompt="a forbidden thing",
                       moderation="low")
        assert low.status_code == 200  # the refused request did not use the one token
    assert [call.prompt for call in fake_backend.calls] == ["a forbidden thing"]

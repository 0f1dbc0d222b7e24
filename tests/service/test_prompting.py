"""dall-e-3's revised_prompt: the prompt kept word for word, extended by style."""

from __future__ import annotations

import pytest

from diffuserve.protocol.rules import VERBATIM_PREFIX
from diffuserve.service.prompting import revise_prompt

PROMPTS = ["a red fox in the snow", "A lighthouse at dusk.", "x", "two cats; one dog"]


@pytest.mark.parametrize("style", ["vivid", "natural", None])
def test_same_prompt_and_style_give_the_same_revision(style: str | None) -> None:
    assert revise_prompt("a red fox in the snow", style) == revise_prompt(
        "a red fox in the snow", style
    )


@pytest.mark.parametrize("prompt", PROMPTS)
def test_vivid_and_natural_revisions_differ(prompt: str) -> None:
    assert revise_prompt(prompt, "vivid") != revise_prompt(prompt, "natural")


@pytest.mark.parametrize("prompt", PROMPTS)
def test_no_style_means_vivid(prompt: str) -> None:
    assert revise_prompt(prompt, None) == revise_prompt(prompt, "vivid")


@pytest.mark.parametrize("style", ["vivid", "natural"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_revision_starts_with_the_original_words(prompt: str, style: str) -> None:
    revised = revise_prompt(prompt, style)

    assert revised.startswith(prompt.rstrip(" .,;:") + ", ")
    assert len(revised) > len(prompt) + 2


@pytest.mark.parametrize("style", ["vivid", "natural", None])
def test_opt_out_prefix_returns_the_rest_as_is(style: str | None) -> None:
    prompt = f"{VERBATIM_PREFIX} a red fox in the snow."

    assert revise_prompt(prompt, style) == "a red fox in the snow."


@pytest.mark.parametrize("style", ["vivid", "natural", None])
def test_unstyled_revision_is_the_prompt_as_written(style: str | None) -> None:
    assert revise_prompt("  a red fox in the snow ", style, styled=False) == (
        "a red fox in the snow")
    prompt = f"{VERBATIM_PREFIX} a red fox."
    assert revise_prompt(prompt, style, styled=False) == "a red fox."


def test_opt_out_prefix_only_counts_at_the_start() -> None:
    prompt = f"a red fox. {VERBATIM_PREFIX} in the snow"

    assert revise_prompt(prompt, "vivid") != prompt

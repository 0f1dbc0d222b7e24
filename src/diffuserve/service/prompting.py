"""The deterministic prompt enhancer behind dall-e-3's ``revised_prompt``.

OpenAI rewrites dall-e-3 prompts before drawing and returns the rewrite. diffuserve
does the same without a language model: the prompt is kept word for word and extended
with a few phrases chosen by ``style``: *vivid* asks for dramatic light and saturated
colour, *natural* for plain, realistic rendering. The choice among phrases depends only
on the prompt's text, so one prompt always gets the same revision.
"""

from __future__ import annotations

import hashlib

from diffuserve.protocol.rules import VERBATIM_PREFIX

_VIVID = (
    ("dramatic cinematic lighting", "bold volumetric light", "striking rim lighting"),
    ("vibrant saturated colours", "rich vivid colour palette", "intense luminous colours"),
    ("hyper-detailed", "crisp intricate detail", "sharp focus with fine detail"),
)
_NATURAL = (
    ("soft natural daylight", "even natural lighting", "gentle ambient light"),
    ("true-to-life colours", "realistic muted tones", "natural colour balance"),
    ("realistic photograph", "plain realistic rendering", "lifelike, unembellished detail"),
)


def _pick(options: tuple[str, ...], prompt: str, slot: int) -> str:
    digest = hashlib.sha256(f"{slot}:{prompt}".encode()).digest()
    return options[digest[0] % len(options)]


def revise_prompt(prompt: str, style: str | None, styled: bool = True) -> str:
    """Return the prompt actually drawn for ``prompt`` in ``style`` (vivid by default).

    A prompt that starts with OpenAI's opt-out sentence is used as it is, without the
    sentence itself; so is every prompt when ``styled`` is false (a model whose training
    captions hold no such phrases, such as the built-in one, would only be misled).
    """
    stripped = prompt.strip()
    if stripped.startswith(VERBATIM_PREFIX):
        return stripped[len(VERBATIM_PREFIX):].strip() or stripped
    if not styled:
        return stripped
    groups = _NATURAL if style == "natural" else _VIVID
    body = stripped.rstrip(" .,;:")
    additions = ", ".join(_pick(options, body, slot) for slot, options in enumerate(groups))
    return f"{body}, {additions}."

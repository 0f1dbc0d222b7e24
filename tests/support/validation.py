"""One model name's rules run over a generation request: what they keep, or the
refusal."""

from __future__ import annotations

from typing import Any

import pytest

from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.rules import ModelRules, ValidatedRequest


def make_request(**fields: Any) -> ImageGenerationRequest:
    fields.setdefault("prompt", "a red fox in the snow")
    return ImageGenerationRequest(**fields)


def validate(rules: ModelRules, **fields: Any) -> ValidatedRequest:
    return rules.validate(make_request(**fields), "some-model")


def rejection(rules: ModelRules, **fields: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        validate(rules, **fields)
    return info.value

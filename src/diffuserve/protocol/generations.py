"""The body of ``POST /v1/images/generations``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr

from diffuserve.protocol.common import parse_json_body


class ImageGenerationRequest(BaseModel):
    """The JSON body of ``POST /v1/images/generations``.

    ``None`` means "not given": OpenAI treats an explicit ``null`` like an omitted field.
    The last five fields are diffuserve extensions, sent with the SDK's ``extra_body``
    (``lora``: the LoRA adapters to draw with, :mod:`diffuserve.protocol.adapters`).
    """

    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr
    model: StrictStr | None = None
    n: StrictInt | None = None
    size: StrictStr | None = None
    quality: StrictStr | None = None
    style: StrictStr | None = None
    response_format: StrictStr | None = None
    user: StrictStr | None = None
    # The GPT-image fields (protocol/image_options.py).
    background: StrictStr | None = None
    moderation: StrictStr | None = None
    output_format: StrictStr | None = None
    output_compression: StrictInt | None = None
    partial_images: StrictInt | None = None
    stream: StrictBool | None = None
    complexity: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    frame_count: StrictInt | None = None
    frame_duration_ms: StrictInt | None = None
    svg: dict[str, Any] | None = None

    seed: StrictInt | None = None
    num_inference_steps: StrictInt | None = None
    guidance_scale: StrictFloat | StrictInt | None = None
    negative_prompt: StrictStr | None = None
    lora: dict[str, Any] | list[Any] | None = None


def parse_generation_request(raw: bytes) -> ImageGenerationRequest:
    """The request in ``raw``, or OpenAI's 400 for a body that is not one."""
    request: ImageGenerationRequest = parse_json_body(raw, ImageGenerationRequest)
    return request

"""``POST /v1/content_provenance_checks``: the uploaded file's checks, and the answer in
OpenAI's shape (openai-python's ``ContentProvenanceCheck``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel

from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.uploads import PILLOW_FORMATS, ProbedImage, Upload, probe_image

#: The form's one file.
FILE_PARAM = "file"
#: Formats a check reads (OpenAI's also takes GIF and audio; no image served here is one).
CHECK_FORMATS = tuple(PILLOW_FORMATS)
#: The largest file a check takes: a GPT-image upload's limit.
MAX_CHECK_BYTES = 50 << 20


class C2paResult(BaseModel):
    """The C2PA manifest the file carries, if any, and whether it validates."""

    type: Literal["c2pa"] = "c2pa"
    #: ``detected``: a manifest that validates (``valid``, or ``trusted`` when its signer's
    #: chain ends in a configured trust anchor).
    outcome: Literal["detected", "not_detected"]
    validation_state: Literal["trusted", "valid", "invalid", "not_present"]
    issuer: str | None = None
    #: The model its generative action names (its software agent).
    model: str | None = None
    #: That action's time, UTC RFC 3339.
    generated_at: str | None = None


class WatermarkResult(BaseModel):
    """Whether this server's invisible watermark is in the pixels (diffuserve's own
    result type, beside OpenAI's ``c2pa`` and ``synthid``)."""

    type: Literal["watermark"] = "watermark"
    outcome: Literal["detected", "not_detected"]


class ContentProvenanceCheck(BaseModel):
    object: Literal["content_provenance_check"] = "content_provenance_check"
    created_at: int
    results: list[C2paResult | WatermarkResult]


def read_check_upload(form: Mapping[str, Sequence[str | Upload]]) -> ProbedImage:
    """The form's ``file``, its header read and checked (PNG, JPEG or WebP, less than
    :data:`MAX_CHECK_BYTES`, within the pixel limit); nothing decoded yet."""
    unknown = sorted(name for name in form if name != FILE_PARAM)
    if unknown:
        raise InvalidRequestError(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0],
                                  code="unknown_parameter")
    parts = form.get(FILE_PARAM, [])
    files = [part for part in parts if isinstance(part, Upload)]
    if not parts:
        raise InvalidRequestError("Missing required parameter: 'file'.", param=FILE_PARAM,
                                  code="missing_required_parameter")
    if len(parts) > 1 or not files:
        raise InvalidRequestError("Invalid 'file': expected one file (an image).",
                                  param=FILE_PARAM, code="invalid_value")
    return probe_image(files[0], FILE_PARAM, formats=CHECK_FORMATS, max_bytes=MAX_CHECK_BYTES)

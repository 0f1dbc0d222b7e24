"""The one table: every engine and storage error becomes one status and envelope."""

from __future__ import annotations

import pytest

from diffuserve.api.errors import SERVER_ERROR_MESSAGE, to_api_error
from diffuserve.engine import errors as engine
from diffuserve.storage import base as storage
from tests.support.engine_errors import SAMPLES

EXPECTED = {
    "QueueFull": (429, "requests", "rate_limit_exceeded", {"Retry-After": "12"}),
    "Draining": (503, "server_error", None, {"Retry-After": "7"}),
    "ModelNotLoaded": (503, "server_error", None, {"Retry-After": "5"}),
    "WorkerLost": (503, "server_error", None, {"Retry-After": "3"}),
    "UnknownModel": (500, "server_error", None, {"x-should-retry": "false"}),
    "ResidencyRefused": (400, "invalid_request_error", "unsupported_value", {}),
    "UnsupportedTask": (400, "invalid_request_error", "unsupported_value", {}),
    "TooManyImages": (400, "invalid_request_error", "too_many_images", {}),
    "PromptTooLong": (400, "invalid_request_error", "string_above_max_length", {}),
    "Cancelled": (503, "server_error", None, {"Retry-After": "1"}),
    "OutOfMemory": (500, "server_error", None, {"x-should-retry": "false"}),
    "ContentFlagged": (400, "invalid_request_error", "content_policy_violation", {}),
    "GenerationFailed": (500, "server_error", None, {"x-should-retry": "false"}),
    "ModelLoadFailed": (503, "server_error", None, {"Retry-After": "30"}),
}


@pytest.mark.parametrize("error", [e for e in SAMPLES if not isinstance(
    e, engine.DeadlineExceeded)], ids=lambda error: type(error).__name__)
def test_each_engine_error_has_its_status(error: engine.EngineError) -> None:
    status, kind, code, headers = EXPECTED[type(error).__name__]

    api = to_api_error(error)

    assert (api.status_code, api.error_type, api.code) == (status, kind, code)
    assert api.headers == headers
    assert set(api.envelope()["error"]) == {"message", "type", "param", "code"}
    if status >= 500 and status != 503:
        # Details (paths, CUDA messages) stay in the log.
        assert api.message == SERVER_ERROR_MESSAGE


def test_a_deadline_in_the_queue_is_overload_and_while_drawing_a_timeout() -> None:
    queued = to_api_error(engine.DeadlineExceeded(started=False, timeout_seconds=540.0,
                                                  retry_after=30))
    drawing = to_api_error(engine.DeadlineExceeded(started=True, timeout_seconds=540.0,
                                                   retry_after=30))

    assert (queued.status_code, queued.code, queued.headers) == (
        429, "rate_limit_exceeded", {"Retry-After": "30"})
    assert "waited 540s" in queued.message
    assert (drawing.status_code, drawing.code, drawing.headers) == (
        408, "timeout", {"x-should-retry": "false"})
    assert "deadline of 540s" in drawing.message


@pytest.mark.parametrize(("ttl", "wording"), [
    (3600, "60 minutes"), (60, "1 minute"), (45, "45 seconds"), (90, "90 seconds"),
    (1, "1 second")])
def test_an_expired_link_says_how_long_links_live(ttl: int, wording: str) -> None:
    api = to_api_error(storage.LinkExpired(ttl))

    assert (api.status_code, api.code) == (404, "expired")
    assert f"valid for {wording} after generation" in api.message


def test_a_bad_or_gone_link() -> None:
    invalid = to_api_error(storage.LinkInvalid("its signature does not match"))
    gone = to_api_error(storage.ImageGone())

    assert (invalid.status_code, invalid.code) == (403, "invalid_signature")
    assert invalid.message == "This image link is not valid: its signature does not match."
    assert (gone.status_code, gone.code) == (404, "image_not_found")


def test_too_many_images_and_a_long_prompt_say_the_models_limit() -> None:
    images = to_api_error(engine.TooManyImages("qwen-edit", 3, 4))
    one = to_api_error(engine.TooManyImages("sd", 1, 2))
    prompt = to_api_error(engine.PromptTooLong("flux", 512, 600))

    assert images.param == one.param == "image"
    assert images.message == ("The model 'qwen-edit' takes at most 3 images in one edit; 4 "
                              "were sent. Send at most 3.")
    assert "'sd' edits one image at a time; 2 were sent" in one.message
    assert prompt.param == "prompt"
    assert "600 tokens long" in prompt.message and "'flux' reads at most 512" in prompt.message


def test_an_unknown_exception_is_a_plain_500() -> None:
    api = to_api_error(RuntimeError("secret detail"))

    assert (api.status_code, api.message) == (500, SERVER_ERROR_MESSAGE)

"""Streamed generations: OpenAI's Server-Sent Events, parsed by the SDK's own stream."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from diffuserve.engine.types import GenerationParams, StepCallback
from tests.support.clients import AUTH, make_client, sdk_for
from tests.support.fakes import FakeBackend

STEPS = 8


class PreviewingBackend(FakeBackend):
    """Takes ``STEPS`` steps and offers a preview at each: a grey whose level is the
    step, so a test can tell which step a partial image shows."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.started = threading.Event()

    def generate(self, params: GenerationParams, on_step: StepCallback | None = None
                 ) -> list[Image.Image]:
        self.started.set()
        for step in range(1, params.num_inference_steps + 1):
            if self.fail_at == step:
                raise RuntimeError("the device fell over")
            if on_step is not None:
                on_step(step, params.num_inference_steps, lambda index, step=step: Image.new(
                    "RGB", (params.width, params.height), (step * 10,) * 3))
        return super().generate(params)


@pytest.fixture
def backend() -> PreviewingBackend:
    return PreviewingBackend()


@pytest.fixture
def client(tmp_path: Path, backend: PreviewingBackend) -> TestClient:
    return make_client(tmp_path, backend, auto_aliases=True, aliases=())



def grey(b64: str) -> int:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return int(image.convert("L").getpixel((0, 0)))  # type: ignore[arg-type]


@pytest.mark.parametrize("partial_images", [0, 1, 3])
def test_partial_images_then_one_completed_event_per_image(
    client: TestClient, partial_images: int
) -> None:
    with client:
        stream = sdk_for(client).images.generate(
            model="gpt-image-2", prompt="a red apple", stream=True, n=2, size="512x512",
            partial_images=partial_images, output_format="webp",
            extra_body={"num_inference_steps": STEPS})
        events = list(stream)
    partials = [e for e in events if e.type == "image_generation.partial_image"]
    completed = [e for e in events if e.type == "image_generation.completed"]
    assert [e.partial_image_index for e in partials] == list(range(partial_images))
    assert len(completed) == 2 and events[-2:] == completed
    # Evenly spaced previews of the work in progress, not copies of the final image.
    shown = [grey(e.b64_json) // 10 for e in partials]
    assert shown == sorted(set(shown)) and all(0 < step < STEPS for step in shown)
    for event in events:
        assert (event.background, event.output_format, event.size) == ("auto", "webp",
                                                                       "512x512")
        assert event.quality == "auto" and event.created_at > 0
        assert base64.b64decode(event.b64_json).startswith(b"RIFF")
    usages = [e.usage for e in completed]
    assert usages[0].input_tokens == 3 and usages[1].input_tokens == 0
    assert all(u.output_tokens == 264 for u in usages)  # 512² at medium: a quarter of 1056


def test_the_wire_format_is_named_events_with_json_data(client: TestClient) -> None:
    with client:
        response = client.post("/v1/images/generations", headers=AUTH, json={
            "model": "gpt-image-1", "prompt": "a", "stream": True, "partial_images": 1,
            "num_inference_steps": STEPS})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in response.text.split("\n\n") if block]
    assert [block.splitlines()[0] for block in blocks] == [
        "event: image_generation.partial_image", "event: image_generation.completed"]
    assert all(block.splitlines()[1].startswith("data: {") for block in blocks)


def test_an_error_after_the_stream_started_is_raised_by_the_sdk(tmp_path: Path) -> None:
    failing = PreviewingBackend(fail_at=6)
    with make_client(tmp_path, failing, auto_aliases=True, aliases=()) as client:
        stream = sdk_for(client).images.generate(
            model="gpt-image-2", prompt="a", stream=True, partial_images=3,
            extra_body={"num_inference_steps": STEPS})
        with pytest.raises(openai.APIError) as caught:
            list(stream)
    assert caught.value.message == (
        "The server had an error while processing your request. Sorry about that!")


def test_dall_e_names_do_not_stream(client: TestClient) -> None:
    with client, pytest.raises(openai.BadRequestError) as caught:
        sdk_for(client).images.generate(model="dall-e-3", prompt="a", stream=True)
    assert (caught.value.param, caught.value.code) == ("stream", "unknown_parameter")


def test_stream_with_a_full_queue_is_a_429_not_a_broken_stream(tmp_path: Path) -> None:
    slow = FakeBackend(delay=1.0)
    with make_client(tmp_path, slow, auto_aliases=True, aliases=(), max_queue=1,
                     batching=False) as client:
        def send(prompt: str) -> threading.Thread:
            thread = threading.Thread(target=client.post, args=("/v1/images/generations",),
                                      kwargs={"headers": AUTH, "json": {"prompt": prompt}})
            thread.start()
            return thread

        def wait_for(condition: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 10
            while not condition():
                assert time.monotonic() < deadline
                time.sleep(0.01)

        running = send("running")
        wait_for(lambda: bool(slow.calls))  # drawing: the queue is empty again
        queued = send("queued")
        wait_for(lambda: 'diffuserve_queue_depth{model="fake"} 1.0' in client.get(
            "/metrics", headers=AUTH).text)  # now the queue is full
        response = client.post("/v1/images/generations", headers=AUTH, json={
            "model": "gpt-image-2", "prompt": "a", "stream": True})
        running.join()
        queued.join()
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"

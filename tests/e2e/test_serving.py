"""Cancellation and graceful shutdown on a live server with a real (tiny) pipeline."""

from __future__ import annotations

import base64
import io
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.live_server import LiveServer, start_server

pytestmark = pytest.mark.e2e

#: Enough denoising work on the tiny pipeline to take a few seconds on two cores.
LONG = {"prompt": "long", "n": 4, "size": "1024x1024", "num_inference_steps": 100,
        "response_format": "b64_json", "model": "tiny"}
QUICK = {"prompt": "quick", "size": "256x256", "num_inference_steps": 1,
         "response_format": "b64_json", "model": "tiny"}


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[LiveServer]:
    live = start_server(["--model", f"tiny={tiny_models['sd']}"],
                        tmp_path_factory.mktemp("serving"))
    yield live
    live.stop()


def post(server: LiveServer, body: dict[str, object], timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/images/generations", json=body, timeout=timeout)


def metric(server: LiveServer, line_start: str) -> float:
    for line in httpx.get(f"{server.base_url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_leaves_stops_its_work(server: LiveServer) -> None:
    # Judged by what the server did, not by wall-clock times (the machine may be busy).
    stopped_before = server.log().count("batch stopped: nobody waits for it")
    images_before = metric(server, 'diffuserve_images_generated_total{model="tiny"}')
    with pytest.raises(httpx.ReadTimeout):
        post(server, LONG, timeout=0.5)
    deadline = time.monotonic() + 60
    while server.log().count("batch stopped: nobody waits for it") == stopped_before:
        assert time.monotonic() < deadline, "the abandoned batch never stopped"
        time.sleep(0.05)
    # It stopped at a step, before drawing its images, and the device is free again.
    assert metric(server, 'diffuserve_images_generated_total{model="tiny"}') == images_before
    assert post(server, QUICK).status_code == 200
    assert metric(server, 'diffuserve_requests_total{model="tiny",status="499"}') == 1


def test_an_oversized_header_gets_431_from_the_live_server(server: LiveServer) -> None:
    response = httpx.get(f"{server.base_url}/health",
                         headers={"Authorization": "Bearer " + "x" * 64 * 1024})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "request_header_fields_too_large"
    assert httpx.get(f"{server.base_url}/health").status_code == 200


def send_and_stay(server: LiveServer, body: dict[str, object]) -> socket.socket:
    """A generation request whose client stays until the socket is closed."""
    payload = json.dumps(body).encode()
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    connection.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Content-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
    return connection


def wait_for(condition: Callable[[], bool], failure: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def test_queued_work_of_a_client_that_left_is_dropped(server: LiveServer) -> None:
    # Judged by what the server did, step by step: no wall-clock guesses, and the long
    # call that keeps the device busy is cut short by its own client, not waited for.
    images = 'diffuserve_images_generated_total{model="tiny"}'
    queued = 'diffuserve_queue_depth{model="tiny"}'
    images_before = metric(server, images)
    calls_before = metric(server, "diffuserve_batch_images_count")
    stopped_before = server.log().count("batch stopped: nobody waits for it")

    running = send_and_stay(server, {**LONG, "num_inference_steps": 200})
    wait_for(lambda: metric(server, "diffuserve_batch_images_count") > calls_before,
             "the long call never started")
    leaving = send_and_stay(server, {**QUICK, "prompt": "leaves", "num_inference_steps": 3})
    wait_for(lambda: metric(server, queued) == 1, "the second request was never queued")
    leaving.close()
    # Dropped from the queue while the device is still busy with the long call.
    wait_for(lambda: metric(server, queued) == 0, "the request of a client that left "
                                                   "stayed queued")
    running.close()
    wait_for(lambda: server.log().count("batch stopped: nobody waits for it")
             > stopped_before, "the long call went on without its client")

    assert post(server, QUICK).status_code == 200
    # Only that last request was drawn: neither the one that left nor the one cut short.
    assert metric(server, images) == images_before + 1


def test_sigterm_finishes_running_work_and_turns_queued_away(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    # Judged by what the server did, step by step: the signal comes once the long call
    # is drawing and the second request waits behind it (no sleeps that a busy machine
    # outlasts), and the grace period is far longer than the running work needs.
    live = start_server(["--model", f"tiny={tiny_models['sd']}", "--shutdown-timeout", "600"],
                        tmp_path)
    results: dict[str, httpx.Response] = {}

    def send(name: str, body: dict[str, object]) -> None:
        results[name] = post(live, body, timeout=600)

    # Long enough that the second request is still queued when the signal arrives.
    running = threading.Thread(target=send, args=("running", {**LONG, "num_inference_steps": 40}))
    running.start()
    wait_for(lambda: metric(live, "diffuserve_batch_images_count") >= 1,
             "the long call never started")
    queued = threading.Thread(target=send, args=("queued", {**QUICK, "num_inference_steps": 2}))
    queued.start()
    wait_for(lambda: metric(live, 'diffuserve_queue_depth{model="tiny"}') == 1,
             "the second request was never queued")
    live.process.send_signal(signal.SIGTERM)
    queued.join(timeout=600)
    running.join(timeout=600)
    assert live.process.wait(timeout=600) == 0
    assert results["running"].status_code == 200
    assert len(results["running"].json()["data"]) == 4
    assert results["queued"].status_code == 503
    assert results["queued"].json()["error"]["type"] == "server_error"
    assert results["queued"].headers["retry-after"] == "5"


def test_work_that_outlives_the_shutdown_grace_period_gets_503_in_the_envelope(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    live = start_server(["--model", f"tiny={tiny_models['sd']}", "--shutdown-timeout", "1"],
                        tmp_path)
    results: dict[str, httpx.Response] = {}
    endless = {**LONG, "num_inference_steps": 200}  # far longer than the grace period
    running = threading.Thread(target=lambda: results.update(running=post(live, endless)))
    running.start()
    deadline = time.monotonic() + 30
    while metric(live, "diffuserve_batch_images_count") < 1:  # drawing has begun
        assert time.monotonic() < deadline
        time.sleep(0.05)
    live.process.send_signal(signal.SIGTERM)
    running.join(timeout=60)
    assert live.process.wait(timeout=60) == 0
    answer = results["running"]
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["retry-after"]
    assert answer.headers["x-request-id"].startswith("req_")
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    log = live.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log


def test_a_stream_shows_real_previews_and_stops_when_its_client_leaves(
    server: LiveServer,
) -> None:
    import openai

    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0) as client:
        events = list(client.images.generate(
            model="gpt-image-2", prompt="a red cube", stream=True, partial_images=2,
            size="256x256", extra_body={"num_inference_steps": 6, "seed": 1}))
    assert [event.type for event in events] == [
        "image_generation.partial_image", "image_generation.partial_image",
        "image_generation.completed"]
    pictures = [base64.b64decode(event.b64_json) for event in events]
    for picture in pictures:
        with Image.open(io.BytesIO(picture)) as image:
            assert image.size == (256, 256)
    assert pictures[0] != pictures[-1] and pictures[1] != pictures[-1]

    stopped_before = server.log().count("batch stopped: nobody waits for it")
    body = {**LONG, "model": "gpt-image-2", "stream": True, "partial_images": 3}
    body.pop("response_format")
    with httpx.stream("POST", f"{server.base_url}/v1/images/generations", json=body,
                      timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # the first partial image: now leave
    deadline = time.monotonic() + 60
    while server.log().count("batch stopped: nobody waits for it") == stopped_before:
        assert time.monotonic() < deadline, "the stream's work went on without its client"
        time.sleep(0.05)


def test_workers_draw_side_by_side_and_each_seed_draws_its_own_image(
        tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """``workers = 2`` on the live server, through the official SDK: concurrent requests
    run as calls that overlap in time, and every image is what its seed draws alone."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    import openai

    models = tmp_path / "models.toml"
    models.write_text(f'[[models]]\nname = "tiny"\nsource = "{tiny_models["sd"]}"\n'
                      'max_batch_size = 1\nworkers = 2\ndevice = "cpu"\n')
    live = start_server(["--models-file", str(models)], tmp_path)
    try:
        client = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key="x", max_retries=0)

        def draw(seed: int) -> bytes:
            answer = client.images.generate(
                model="tiny", prompt="a red apple", size="256x256",
                response_format="b64_json",
                extra_body={"seed": seed, "num_inference_steps": 12})
            return base64.b64decode(answer.data[0].b64_json or "")

        # Four at once on two workers: two calls side by side, twice.
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(draw, range(4)))
        alone = [draw(seed) for seed in range(4)]
        log = live.log()
    finally:
        live.stop()
    for a, b in zip(together, alone, strict=True):
        assert largest_difference(a, b) <= 2  # one seed, one picture (±1 rounding step)
    assert '"workers": 2' in log
    calls = [json.loads(line) for line in log.splitlines()
             if '"message": "generation"' in line]
    assert len(calls) == 8
    # Each call's span on the clock: some of the concurrent ones overlapped.
    from datetime import datetime

    spans = sorted((datetime.fromisoformat(c["ts"].replace("Z", "+00:00")).timestamp()
                    - c["generation_seconds"],
                    datetime.fromisoformat(c["ts"].replace("Z", "+00:00")).timestamp())
                   for c in calls[:4])
    shortest = min(end - start for start, end in spans)
    # Overlapping by half a call: more than any delay in logging could make up.
    assert any(later[0] < earlier[1] - shortest / 2
               for earlier, later in zip(spans, spans[1:], strict=False))


def largest_difference(a: bytes, b: bytes) -> int:
    import numpy as np

    first = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), np.int16)
    second = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), np.int16)
    return int(np.abs(first - second).max())

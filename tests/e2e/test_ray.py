"""End to end on Ray: ``diffuserve serve --ray`` on a local Ray cluster (``ray start
--head --num-cpus 2``, loopback only) with two replicas of the built-in model, two
ingress replicas, url images in a loopback S3 server and rate limits in a real Redis,
driven with the official ``openai`` SDK. Beside it, two replicas of the tiny SD
pipeline with two LoRA adapters, whose requests Ray routes by adapter set.

One cluster serves the whole module (starting it costs most of the time); the replica
killed last is restarted by Ray before the module ends.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from diffuserve import builtin
from diffuserve.deploy.ray_serve import deployment_name, max_ongoing_requests
from tests.support.live_server import LiveServer, start_server
from tests.support.ray_cluster import RAY_ENV, model_replica_cpu, ray_head
from tests.support.redis_server import RedisServer
from tests.support.s3 import MotoS3, S3Bucket
from tests.support.tiny_loras import write_tiny_loras
from tests.support.tiny_pipelines import build_tiny_sd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not builtin.available(),
                       reason="the built-in weights are not in this checkout"),
]

LOAD_KEY = "sk-ray-load-0123456789abcdef"
LIMITED_KEY = "sk-ray-limited-0123456789abcdef"
LIMITED_RPM = 3
#: Requests waiting in front of the model replicas, per ingress replica (Ray's
#: max_queued_requests); each replica also holds twice its batch (max_ongoing_requests).
MAX_QUEUE = 4
#: Every request of these tests is answered well within it, or the test fails.
CLIENT_TIMEOUT = 120.0
#: The built-in model's replicas (the tiny SD model's are left out of their counts).
BUILTIN_REPLICAS = deployment_name(builtin.builtin_spec(), set())


@dataclass
class RayServer:
    server: LiveServer
    bucket: S3Bucket
    redis: RedisServer
    #: Ray Serve's logs: one file per replica, a line per call with its request id.
    serve_logs: Path

    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, key: str = LOAD_KEY, retries: int = 0) -> openai.OpenAI:
        """An SDK client, closed when the module ends; ``retries``: how often it sends a
        refused request again (after its Retry-After, as the SDK does)."""
        client = openai.OpenAI(base_url=f"{self.server.base_url}/v1", api_key=key,
                               max_retries=retries, timeout=CLIENT_TIMEOUT)
        self.clients.append(client)
        return client


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory,
               moto_s3: MotoS3) -> Iterator[RayServer]:
    tmp = tmp_path_factory.mktemp("ray")
    redis = RedisServer(tmp / "redis")
    redis.start()
    bucket = moto_s3.new_bucket()
    keys = tmp / "keys.txt"
    keys.write_text(f"{LOAD_KEY} load\n{LIMITED_KEY} limited rpm={LIMITED_RPM}\n")
    try:
        # The cluster's processes read the S3 variables: the ingress replicas store images.
        with ray_head(tmp, env=bucket.env) as address:
            models = models_file(tmp)  # while the head starts
            server = start_server(
                ["--ray", "--models-file", str(models), "--replicas", "2",
                 "--ingress-replicas", "2",
                 "--storage-url", f"s3://{bucket.name}/ray",
                 "--rate-limit-storage", redis.url(), "--api-keys-file", str(keys),
                 "--shutdown-timeout", "5", "--max-queue", str(MAX_QUEUE)],
                tmp, env={**bucket.env, **RAY_ENV, "RAY_ADDRESS": address}, timeout=300)
            running = RayServer(server, bucket, redis,
                                tmp / "ray" / "session_latest" / "logs" / "serve")
            try:
                yield running
            finally:
                for client in running.clients:
                    client.close()
                assert server.stop() == 0, server.log()
    finally:
        redis.stop()


def models_file(tmp: Path) -> Path:
    """The built-in model as ``serve`` serves it by default (the default model, first),
    and the tiny SD pipeline with an adapters folder (no CPU reserved: the built-in
    model's replicas hold the cluster's two)."""
    write_tiny_loras(build_tiny_sd(tmp / "tiny-sd"), tmp / "loras", ["pixel", "ink"])
    builtin_model = builtin.builtin_spec().model_dump(mode="json", exclude_defaults=True)
    path = tmp / "models.toml"
    path.write_text("[[models]]\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in builtin_model.items()) + f"""
[[models]]
name = "sd"
source = "{tmp / 'tiny-sd'}"
steps = 2
adapters_dir = "loras"

[models.ray]
num_cpus = 0
""")
    return path


def draw(client: openai.OpenAI, prompt: str, size: str = "256x256",
         steps: int | None = None) -> Image.Image:
    result = client.images.generate(model="dall-e-2", prompt=prompt, size=size,  # type: ignore[arg-type]
                                    response_format="b64_json",
                                    extra_body={"num_inference_steps": steps} if steps else None)
    return Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))


def answer(client: openai.OpenAI, prompt: str, size: str = "256x256",
           steps: int | None = None) -> str:
    """"200" for an image drawn, else the refusal's status, Retry-After and message."""
    try:
        draw(client, prompt, size, steps)
        return "200"
    except openai.APIStatusError as exc:
        return (f"{exc.status_code} retry-after={exc.response.headers.get('retry-after')}"
                f" {exc.message}")


def test_generations_edits_and_streams_are_served_through_ray(ray_server: RayServer) -> None:
    client = ray_server.client()

    assert draw(client, "a rocket").size == (256, 256)

    source = Image.new("RGBA", (256, 256), (40, 120, 200, 255))
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (64, 64, 192, 192))
    files = []
    for picture in (source, mask):
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        files.append(("image.png", buffer.getvalue(), "image/png"))
    edited = client.images.edit(model="dall-e-2", image=files[0], mask=files[1],
                                prompt="a smiling cat", size="256x256",
                                response_format="b64_json")
    assert Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json or ""))).size \
        == (256, 256)

    events = [event.type for event in client.images.generate(
        model="gpt-image-1", prompt="a lighthouse", size="1024x1024", stream=True,
        partial_images=2)]
    assert events[-1] == "image_generation.completed"
    assert "image_generation.partial_image" in events[:-1]


def test_url_images_are_fetched_from_the_s3_bucket(ray_server: RayServer) -> None:
    result = ray_server.client().images.generate(
        model="dall-e-2", prompt="a red apple", size="256x256", response_format="url")

    url = result.data[0].url or ""
    assert url.startswith(ray_server.bucket.endpoint_url)
    with httpx.Client(timeout=30) as http:
        fetched = http.get(url)
    assert fetched.status_code == 200
    assert Image.open(io.BytesIO(fetched.content)).size == (256, 256)
    assert any(key.startswith("ray/") for key in ray_server.bucket.keys(""))


def test_the_work_is_spread_over_both_model_replicas(ray_server: RayServer) -> None:
    before = model_replica_cpu(BUILTIN_REPLICAS)
    assert len(before) == 2, before
    # A burst can all reach one ingress replica, whose queue holds MAX_QUEUE (Ray routes
    # by queue lengths it reads before counting the burst in): what it refuses is sent
    # again, as an SDK client does by default. The back-pressure test counts refusals.
    client = ray_server.client(retries=5)

    with ThreadPoolExecutor(8) as pool:
        images = list(pool.map(lambda i: draw(client, f"a cat number {i}"), range(12)))

    assert all(image.size == (256, 256) for image in images)
    after = model_replica_cpu(BUILTIN_REPLICAS)
    used = sorted(after[pid] - before[pid] for pid in before)
    # Each replica drew a fair share: the less busy one at least a fifth of the other.
    assert used[0] > 0.2 * used[1] > 0, used


def draw_tiny(client: openai.OpenAI, lora: Any = None,
              request_id: str | None = None) -> np.ndarray:
    extra: dict[str, Any] = {"seed": 11}
    if lora is not None:
        extra["lora"] = lora
    result = client.images.generate(
        model="sd", prompt="a cat", size="256x256", response_format="b64_json",
        extra_body=extra, extra_headers={"x-request-id": request_id} if request_id else None)
    assert result.data is not None
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(
        result.data[0].b64_json or ""))).convert("RGB"), np.int16)


def replica_that_drew(ray_server: RayServer, request_id: str) -> str:
    """The tiny model's replica whose log has the call of request ``request_id`` (the
    id a client sends as ``x-request-id`` is Ray's for the request and its calls)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for log in ray_server.serve_logs.glob("replica_diffuserve_model-sd_*.log"):
            if any(request_id in line and "CALL stream" in line
                   for line in log.read_text().splitlines()):
                return log.stem.rsplit("_", 1)[1]
        time.sleep(0.2)
    raise AssertionError(f"no replica logged a call of {request_id}")


def test_requests_with_an_adapter_are_drawn_with_it_by_a_replica_that_has_it(
        ray_server: RayServer) -> None:
    client = ray_server.client()
    plain = draw_tiny(client)

    drawn: dict[str, list[np.ndarray]] = {"pixel": [], "ink": []}
    sent: dict[str, list[str]] = {"pixel": [], "ink": []}
    for turn in range(6):
        adapter = ("pixel", "ink")[turn % 2]
        sent[adapter].append(uuid.uuid4().hex)
        drawn[adapter].append(draw_tiny(client, {"name": adapter}, sent[adapter][-1]))
        if turn < 2:  # until every ingress replica heard where the set was drawn
            time.sleep(1.0)

    # Each set's requests went where it was drawn first (by chance: 1 in 64).
    replicas = {adapter: {replica_that_drew(ray_server, request_id) for request_id in ids}
                for adapter, ids in sent.items()}
    assert all(len(found) == 1 for found in replicas.values()), replicas
    for images in drawn.values():
        assert float(np.abs(images[0] - plain).mean()) > 3.0  # the adapter draws
        assert all(int(np.abs(image - images[0]).max()) <= 2 for image in images[1:])
    assert int(np.abs(draw_tiny(client) - plain).max()) <= 2  # and then not


def test_a_keys_limit_holds_across_both_ingress_replicas(ray_server: RayServer) -> None:
    client = ray_server.client(LIMITED_KEY)

    def attempt(i: int) -> int | str:
        try:
            draw(client, f"a dog number {i}")
            return 200
        except openai.RateLimitError as exc:
            return f"429 retry-after={exc.response.headers.get('retry-after')}"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(2 * LIMITED_RPM + 2)))

    assert outcomes.count(200) == LIMITED_RPM, outcomes
    refused = [outcome for outcome in outcomes if outcome != 200]
    assert all(str(outcome).startswith("429 retry-after=") and
               int(str(outcome).split("=")[1]) >= 1 for outcome in refused), refused
    assert ray_server.redis.client().dbsize() > 0  # counted in the shared store


def test_rays_back_pressure_is_a_429_with_retry_after(ray_server: RayServer) -> None:
    client = ray_server.client()

    # First as many long requests as both model replicas hold (max_ongoing_requests
    # each), so that what comes next waits in Ray's queues whatever the drawing speed;
    # then more short ones than both ingress replicas let wait (MAX_QUEUE each). All 50
    # ms apart: Ray checks a handle's queue before it counts the request in it, so
    # simultaneous requests could all pass the check (or overflow it at once).
    in_hand = 2 * max_ongoing_requests(builtin.builtin_spec())
    with ThreadPoolExecutor(in_hand + 2 * MAX_QUEUE + 8) as pool:
        futures = []
        for i in range(in_hand):
            futures.append(pool.submit(answer, client, f"a boat number {i}", steps=60))
            time.sleep(0.05)
        for i in range(2 * MAX_QUEUE + 8):
            futures.append(pool.submit(answer, client, f"a kite number {i}", steps=2))
            time.sleep(0.05)
        outcomes = [future.result(timeout=CLIENT_TIMEOUT) for future in futures]

    refused = [outcome for outcome in outcomes if outcome != "200"]
    assert refused, outcomes
    assert all(outcome.startswith("429 retry-after=") and
               int(outcome.split("=")[1].split()[0]) >= 1 for outcome in refused), outcomes
    assert outcomes.count("200") >= in_hand, outcomes


def test_a_replica_killed_mid_load_loses_no_request_silently(ray_server: RayServer) -> None:
    client = ray_server.client()
    victim = min(model_replica_cpu(BUILTIN_REPLICAS))

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(answer, client, f"a house number {i}", size="1024x1024",
                               steps=40) for i in range(12)]
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        outcomes = [future.result(timeout=CLIENT_TIMEOUT) for future in futures]

    # Every request was answered: drawn by the survivor, or refused as retryable (503
    # for work lost with the replica; 429 when the survivor's queue, --max-queue 4, is
    # full).
    assert all(outcome == "200" or outcome.startswith(("503 retry-after=", "429 retry-after="))
               for outcome in outcomes), outcomes
    assert "200" in outcomes
    # Ray starts a new replica; both serve again.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = model_replica_cpu(BUILTIN_REPLICAS)
        if len(pids) == 2 and victim not in pids and \
                httpx.get(f"{ray_server.server.base_url}/ready").status_code == 200:
            break
        time.sleep(1)
    else:
        pytest.fail(f"no replica replaced the killed one: "
                    f"{model_replica_cpu(BUILTIN_REPLICAS)}")
    with ThreadPoolExecutor(4) as pool:
        assert all(image.size == (256, 256) for image in
                   pool.map(lambda i: draw(client, f"a tree number {i}"), range(4)))

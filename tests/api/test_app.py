"""The HTTP layer in process, over fake backends: envelopes, auth, links, concurrency."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from diffuserve.app import build_app
from diffuserve.config import ModelSpec, Settings
from tests.support.clients import AUTH, KEY, assert_envelope, generate, make_client
from tests.support.fakes import FakeBackend, SlowLoadingBackend


@pytest.fixture
def client(tmp_path: Path, fake_backend: FakeBackend) -> Iterator[TestClient]:
    with make_client(tmp_path, fake_backend) as test_client:
        yield test_client


def test_b64_json_is_a_png_of_the_requested_size(client: TestClient) -> None:
    response = generate(client, prompt="a cat", size="512x512", response_format="b64_json")
    assert response.status_code == 200
    item = response.json()["data"][0]
    assert set(item) == {"b64_json"}
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert (image.format, image.size) == ("PNG", (512, 512))


def test_url_is_absolute_signed_and_fetchable_without_a_key(client: TestClient) -> None:
    url = generate(client, prompt="a cat", size="256x256").json()["data"][0]["url"]
    assert url.startswith("http://testserver/v1/images/files/img_")
    assert "expires=" in url and "sig=" in url
    fetched = client.get(url)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).size == (256, 256)


def test_public_url_sets_the_link_base(tmp_path: Path, fake_backend: FakeBackend) -> None:
    with make_client(tmp_path, fake_backend, public_url="https://img.example.com/api/") as c:
        url = generate(c, prompt="x", size="256x256").json()["data"][0]["url"]
    assert url.startswith("https://img.example.com/api/v1/images/files/")


def test_forwarded_headers_are_ignored_without_trusted_proxies(
    tmp_path: Path, fake_backend: FakeBackend
) -> None:
    forwarded = {**AUTH, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "proxy.example"}
    body = {"prompt": "x", "size": "256x256"}
    with make_client(tmp_path, fake_backend) as untrusting:
        url = untrusting.post("/v1/images/generations", json=body, headers=forwarded)
        assert url.json()["data"][0]["url"].startswith("http://testserver/")


def test_url_resolver_uses_forwarded_headers_of_trusted_proxy() -> None:
    from starlette.requests import Request

    from diffuserve.api.urls import BaseUrlResolver

    def request(client_ip: str) -> Request:
        return Request({
            "type": "http", "scheme": "http", "server": ("10.0.0.5", 8000), "path": "/",
            "root_path": "", "query_string": b"", "client": (client_ip, 5000),
            "headers": [(b"host", b"10.0.0.5:8000"), (b"x-forwarded-proto", b"https"),
                        (b"x-forwarded-host", b"images.example.org, inner")],
        })

    resolver = BaseUrlResolver(None, ["127.0.0.0/8"])
    assert resolver(request("127.0.0.1")) == "https://images.example.org"
    assert resolver(request("192.0.2.7")) == "http://10.0.0.5:8000"


def test_revised_prompt_only_for_dall_e_3(client: TestClient) -> None:
    dalle3 = generate(client, model="dall-e-3", prompt="a lighthouse", style="natural")
    dalle2 = generate(client, model="dall-e-2", prompt="a lighthouse")
    revised = dalle3.json()["data"][0]["revised_prompt"]
    assert revised.startswith("a lighthouse, ")
    assert "revised_prompt" not in dalle2.json()["data"][0]


def test_a_verbatim_model_draws_and_reports_the_prompt_as_written(
    tmp_path: Path, fake_backend: FakeBackend
) -> None:
    spec = ModelSpec(name="fake", source="fake", prompt_revision="verbatim")
    config = Settings(storage_dir=tmp_path / "images", api_keys=(KEY,), models=(spec,))
    with TestClient(build_app(config, backends={"fake": fake_backend})) as client:
        response = generate(client, model="dall-e-3", prompt=" a lighthouse ",
                            response_format="b64_json")
    assert response.json()["data"][0]["revised_prompt"] == "a lighthouse"
    assert fake_backend.calls[-1].prompt == "a lighthouse"


def test_style_and_quality_change_generation_parameters(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    generate(client, model="dall-e-3", prompt="a", style="vivid", quality="hd")
    generate(client, model="dall-e-3", prompt="a", style="natural", quality="standard")
    vivid, natural = fake_backend.calls
    assert (vivid.guidance_scale, natural.guidance_scale) == (7.0, 3.0)
    assert vivid.num_inference_steps > natural.num_inference_steps == 10


def test_style_is_accepted_and_ignored_for_dall_e_2(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    generate(client, model="dall-e-2", prompt="a", style="natural")
    generate(client, model="dall-e-2", prompt="a")
    with_style, without = fake_backend.calls
    assert with_style.guidance_scale == without.guidance_scale == 5.0


def test_extra_body_fields_reach_the_backend(
    client: TestClient, fake_backend: FakeBackend
) -> None:
    response = generate(client, prompt="a", n=3, seed=41, num_inference_steps=7,
                        guidance_scale=2.5, negative_prompt="blurry")
    assert response.status_code == 200
    (params,) = fake_backend.calls
    assert params.seeds == (41, 42, 43)
    assert (params.num_inference_steps, params.guidance_scale) == (7, 2.5)
    assert params.negative_prompt == "blurry"
    assert len(response.json()["data"]) == 3


def test_user_is_logged_and_does_not_change_parameters(
    client: TestClient, fake_backend: FakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="diffuserve.generation"):
        generate(client, prompt="a", seed=5, user="user-1234")
    generate(client, prompt="a", seed=5)
    first, second = fake_backend.calls
    assert first == second
    (record,) = [r for r in caplog.records if r.name == "diffuserve.generation"]
    assert record.fields["user"] == "user-1234"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"prompt": "a", "model": "nope"}, 404, "model_not_found", "model"),
        ({"prompt": "a", "model": "dall-e-3", "n": 2}, 400, None, "n"),
        ({"prompt": "a", "size": "1792x1024", "model": "dall-e-2"}, 400, "invalid_size", "size"),
        ({"prompt": "a", "n": "2"}, 400, "invalid_type", "n"),
        ({"n": 2}, 400, "missing_required_parameter", "prompt"),
        ({"prompt": "a", "colour": "red"}, 400, "unknown_parameter", "colour"),
    ],
)
def test_bad_input_gets_the_envelope(
    client: TestClient, body: dict[str, object], status: int, code: str | None,
    param: str | None,
) -> None:
    assert_envelope(generate(client, **body), status, code, param)


def test_malformed_json_is_400_whatever_the_content_type(client: TestClient) -> None:
    for content_type in ("application/json", "application/x-www-form-urlencoded"):
        response = client.post("/v1/images/generations", content=b"{bad",
                               headers={**AUTH, "Content-Type": content_type})
        error = assert_envelope(response, 400)
        assert "could not parse the JSON body" in str(error["message"])


def test_oversized_body_is_413(tmp_path: Path, fake_backend: FakeBackend) -> None:
    with make_client(tmp_path, fake_backend, max_body_bytes=4096) as small:
        declared = small.post("/v1/images/generations", headers=AUTH,
                              json={"prompt": "a" * 5000})
        assert_envelope(declared, 413, "request_too_large")

        def chunks() -> Iterator[bytes]:
            yield b'{"prompt": "'
            for _ in range(10):
                yield b"a" * 1000
            yield b'"}'

        streamed = small.post("/v1/images/generations", headers=AUTH, content=chunks())
        assert_envelope(streamed, 413, "request_too_large")


def test_unknown_route_and_method_use_the_envelope(client: TestClient) -> None:
    assert_envelope(client.get("/v1/nothing", headers=AUTH), 404, "unknown_url")
    assert_envelope(client.get("/v1/images/generations", headers=AUTH), 405,
                    "method_not_allowed")


def test_keys_are_required_when_configured(client: TestClient) -> None:
    missing = client.post("/v1/images/generations", json={"prompt": "a"})
    assert "You didn't provide an API key" in str(assert_envelope(missing, 401)["message"])
    wrong = client.post("/v1/images/generations", json={"prompt": "a"},
                        headers={"Authorization": "Bearer sk-wrong-key-value-99"})
    message = str(assert_envelope(wrong, 401, "invalid_api_key")["message"])
    assert message.startswith("Incorrect API key provided: sk-wr***99.")
    assert client.get("/v1/models").status_code == 401


def test_health_ready_and_image_links_need_no_key(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200


def test_ready_is_503_while_models_load(tmp_path: Path) -> None:
    backend = SlowLoadingBackend()
    with make_client(tmp_path, backend) as slow:
        loading = slow.get("/ready")
        assert loading.status_code == 503
        assert loading.json()["models"] == {"fake": False}
        early = generate(slow, prompt="a")
        assert_envelope(early, 503)
        assert early.headers["retry-after"] == "5"
        backend.release.set()
        deadline = time.monotonic() + 5
        while slow.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_backend_failure_is_a_500_envelope_without_details(tmp_path: Path) -> None:
    failing = FakeBackend(error=RuntimeError("CUDA exploded at /secret/path"))
    with make_client(tmp_path, failing) as c:
        response = generate(c, prompt="a")
        error = assert_envelope(response, 500)
        assert error["message"] == (
            "The server had an error while processing your request. Sorry about that!"
        )
        assert "secret" not in response.text
        failing.error = None
        assert generate(c, prompt="a").status_code == 200


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    ids = {generate(client, prompt="a").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(i.startswith("req_") for i in ids)


def test_models_list_and_retrieve(client: TestClient) -> None:
    listing = client.get("/v1/models", headers=AUTH).json()
    assert listing["object"] == "list"
    assert {m["id"] for m in listing["data"]} == {"fake", "dall-e-2", "dall-e-3"}
    assert client.get("/v1/models/dall-e-3", headers=AUTH).json()["id"] == "dall-e-3"
    assert_envelope(client.get("/v1/models/nope", headers=AUTH), 404, "model_not_found", "model")
    # Each name says which served model draws for it (vLLM's `root`).
    assert {m["id"]: m["root"] for m in listing["data"]} == {
        "fake": "fake", "dall-e-2": "fake", "dall-e-3": "fake"}
    assert client.get("/v1/models/dall-e-2", headers=AUTH).json()["root"] == "fake"


def test_generation_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """While one slow generation runs, /health still answers at once."""
    slow = FakeBackend(delay=3.0)
    with make_client(tmp_path, slow) as c:
        worker = threading.Thread(target=generate, args=(c,), kwargs={"prompt": "slow"})
        worker.start()
        while not slow.calls:
            time.sleep(0.01)
        assert c.get("/health").status_code == 200
        # Answered while the generation was still running (not after it).
        assert worker.is_alive()
        worker.join()


def test_concurrent_requests_run_one_at_a_time_in_arrival_order(tmp_path: Path) -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    class Counting(FakeBackend):
        def generate(self, params, on_step=None):  # type: ignore[no-untyped-def]
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            try:
                time.sleep(0.05)
                return super().generate(params, on_step)
            finally:
                with lock:
                    active -= 1

    backend = Counting()
    with make_client(tmp_path, backend) as c:
        threads = []
        for i in range(6):
            thread = threading.Thread(target=generate, args=(c,),
                                      kwargs={"prompt": "p" * (i + 1), "seed": i})
            thread.start()
            threads.append(thread)
            time.sleep(0.02)  # make the arrival order unambiguous
        for thread in threads:
            thread.join()
    assert peak == 1
    assert [call.seeds[0] for call in backend.calls] == list(range(6))

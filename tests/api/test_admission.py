"""Validate, then admit: invalid requests never touch the buckets or the user labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.clients import AUTH, assert_envelope, generate, make_client
from tests.support.fakes import FakeBackend


def remaining_images(client: TestClient) -> int:
    response = generate(client, prompt="probe", n=1, size="256x256")
    assert response.status_code == 200, response.text
    return int(response.headers["x-ratelimit-remaining-images"])


@pytest.mark.parametrize("n", [-1000, -1, 0, 11, 10**12])
def test_an_invalid_n_never_changes_the_image_bucket(
    tmp_path: Path, fake_backend: FakeBackend, n: int
) -> None:
    with make_client(tmp_path, fake_backend, rate_limit_ipm=5) as client:
        assert remaining_images(client) == 4
        refused = generate(client, prompt="a", n=n, model="dall-e-2")
        assert_envelope(refused, 400, param="n")
        # Neither refilled (n < 0) nor drained (n too large) by the refused request.
        assert remaining_images(client) == 3


def test_n_above_the_models_maximum_is_400_even_under_a_smaller_limit(
    tmp_path: Path, fake_backend: FakeBackend
) -> None:
    with make_client(tmp_path, fake_backend, rate_limit_ipm=5) as client:
        response = generate(client, prompt="a", n=11, model="dall-e-2")
    assert_envelope(response, 400, param="n")


def test_an_invalid_request_takes_no_request_token(
    tmp_path: Path, fake_backend: FakeBackend
) -> None:
    with make_client(tmp_path, fake_backend, rate_limit_rpm=2) as client:
        for _ in range(5):
            assert_envelope(generate(client, prompt="a", size="7x7"), 400, "invalid_size",
                            "size")
        assert generate(client, prompt="a").status_code == 200
        assert generate(client, prompt="a").status_code == 200
        assert generate(client, prompt="a").status_code == 429


def test_an_over_long_user_never_reaches_the_metrics(
    tmp_path: Path, fake_backend: FakeBackend
) -> None:
    long_user = "u" * 257
    with make_client(tmp_path, fake_backend) as client:
        refused = generate(client, prompt="a", user=long_user)
        assert_envelope(refused, 400, "string_above_max_length", "user")
        assert generate(client, prompt="a", user="u" * 256).status_code == 200
        metrics = client.get("/metrics", headers=AUTH).text
    assert long_user not in metrics
    assert f'user="{"u" * 256}"' in metrics
    # The refused request is still counted, by model and status.
    assert 'diffuserve_requests_total{model="fake",status="400"} 1.0' in metrics


def test_a_rate_limited_request_is_counted_but_never_drawn(
    tmp_path: Path, fake_backend: FakeBackend
) -> None:
    with make_client(tmp_path, fake_backend, rate_limit_rpm=1) as client:
        assert generate(client, prompt="first").status_code == 200
        assert generate(client, prompt="second").status_code == 429
        metrics = client.get("/metrics", headers=AUTH).text
    assert [call.prompt for call in fake_backend.calls] == ["first"]
    assert "diffuserve_rate_limited_total 1.0" in metrics
    assert 'diffuserve_requests_total{model="fake",status="429"} 1.0' in metrics

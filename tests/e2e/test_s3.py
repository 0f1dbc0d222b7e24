"""End to end: ``diffuserve serve --storage-url s3://…`` on the built-in model, with a
loopback S3 server (moto, presigned links checked) and the official ``openai`` SDK."""

from __future__ import annotations

import io
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from PIL import Image

from diffuserve import builtin
from diffuserve.service.credentials import IDENTITY_FILE
from tests.support.live_server import LiveServer
from tests.support.s3 import SECRET_ACCESS_KEY, S3Bucket

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not builtin.available(),
                       reason="the built-in weights are not in this checkout"),
]

API_KEY = "sk-test-s3-0123456789abcdef"


def test_url_images_are_kept_in_the_bucket_and_fetched_from_it(
    server_factory: Callable[..., LiveServer], s3_bucket: S3Bucket
) -> None:
    server = server_factory(
        ["--storage-url", f"s3://{s3_bucket.name}/generated", "--api-key", API_KEY],
        env=s3_bucket.env)
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0,
                       timeout=120) as client:
        result = client.images.generate(model="dall-e-2", prompt="a red apple",
                                        size="256x256", response_format="url",
                                        extra_body={"num_inference_steps": 2})

    url = result.data[0].url
    assert url is not None
    assert url.startswith(f"{s3_bucket.endpoint_url}/{s3_bucket.name}/generated/img_")
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(fetched.content)) as image:
        assert (image.format, image.size) == ("PNG", (256, 256))
    assert s3_bucket.keys("generated/") == [urlsplit(url).path.split("/", 2)[2]]
    # Nothing local but the content credentials' identity: no image, no link-signing key.
    assert sorted(path.name for path in server.storage_dir.rglob("*")) == [IDENTITY_FILE]
    assert server.stop() == 0
    log = server.log()
    assert f"s3://{s3_bucket.name}/generated" in log  # the start-up summary
    assert SECRET_ACCESS_KEY not in log and "X-Amz-Signature" not in log


def test_serve_with_a_missing_bucket_exits_with_one_paragraph(
    server_factory: Callable[..., LiveServer], s3_bucket: S3Bucket
) -> None:
    server = server_factory(["--storage-url", "s3://not-created-here"], env=s3_bucket.env,
                            wait_ready=False)

    assert server.process.wait(timeout=60) == 1
    log = server.log()
    assert ("diffuserve: S3 storage s3://not-created-here (endpoint "
            f"{s3_bucket.endpoint_url}) cannot be used: the bucket 'not-created-here' does "
            "not exist.") in log
    assert "Traceback" not in log

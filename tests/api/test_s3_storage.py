"""url images kept in an S3 bucket, through the HTTP layer in process."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from diffuserve.app import build_app
from diffuserve.config import ModelSpec, Settings
from diffuserve.storage.base import StorageUnavailable
from diffuserve.storage.signing import SECRET_FILE
from tests.support.clients import assert_envelope, generate, make_client
from tests.support.fakes import FakeBackend
from tests.support.s3 import S3Bucket


def test_a_url_image_is_a_presigned_link_to_the_bucket(
    tmp_path: Path, fake_backend: FakeBackend, s3_bucket: S3Bucket
) -> None:
    with make_client(tmp_path, fake_backend,
                     storage_url=f"s3://{s3_bucket.name}/generated") as client:
        url = generate(client, prompt="a cat", size="256x256").json()["data"][0]["url"]
        # The local store's route is not served: nothing of ours is behind it.
        files = client.get("/v1/images/files/img_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.png")

    assert url.startswith(f"{s3_bucket.endpoint_url}/{s3_bucket.name}/generated/img_")
    fetched = httpx.get(url)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(fetched.content)) as image:
        assert (image.format, image.size) == ("PNG", (256, 256))
    assert s3_bucket.keys() == [urlsplit(url).path.split("/", 2)[2]]
    assert_envelope(files, 404, code="unknown_url")
    # Links are the bucket's to sign: no link-signing key was made (the storage folder
    # keeps the content credentials' identity only).
    assert not (tmp_path / "images" / SECRET_FILE).exists()


def test_an_s3_failure_while_storing_is_503_with_retry_after(
    tmp_path: Path, fake_backend: FakeBackend, s3_bucket: S3Bucket
) -> None:
    with make_client(tmp_path, fake_backend, storage_url=f"s3://{s3_bucket.name}") as client:
        s3_bucket.client.delete_bucket(Bucket=s3_bucket.name)

        failed = generate(client, prompt="a cat", size="256x256", response_format="url")
        inline = generate(client, prompt="a cat", size="256x256", response_format="b64_json")

    error = assert_envelope(failed, 503)
    assert error["type"] == "server_error"
    assert error["message"] == ("The generated image could not be stored. Please retry your "
                                "request, or ask for response_format=b64_json.")
    assert int(failed.headers["retry-after"]) > 0
    # Images that need no storage are still drawn.
    assert inline.status_code == 200


def test_a_missing_bucket_stops_the_start(tmp_path: Path, fake_backend: FakeBackend,
                                          s3_bucket: S3Bucket) -> None:
    with pytest.raises(StorageUnavailable, match="'not-created-here' does not exist"), \
            make_client(tmp_path, fake_backend, storage_url="s3://not-created-here"):
        pass


def test_under_the_cli_a_missing_bucket_is_one_fatal_paragraph(
    tmp_path: Path, fake_backend: FakeBackend, s3_bucket: S3Bucket
) -> None:
    settings = Settings(storage_url="s3://not-created-here", storage_dir=tmp_path / "images",
                        models=(ModelSpec(name="fake", source="fake"),))
    reported: list[str] = []
    app = build_app(settings, backends={"fake": fake_backend}, on_fatal=reported.append)

    with TestClient(app):
        pass

    assert len(reported) == 1
    assert "the bucket 'not-created-here' does not exist" in reported[0]

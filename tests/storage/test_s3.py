"""The S3 store against a loopback S3 server (moto, with presigned links checked)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import ValidationError

from diffuserve.config import Settings
from diffuserve.storage.base import StorageUnavailable
from diffuserve.storage.s3 import S3ImageStore, S3Location, parse_storage_url
from tests.support.live_server import free_port
from tests.support.s3 import SECRET_ACCESS_KEY, S3Bucket

TTL = 3600
PNG = b"\x89PNG\r\n\x1a\n fake image bytes"
NOW = 1_800_000_000.0


def make_store(bucket: S3Bucket, prefix: str = "", **options: Any) -> S3ImageStore:
    return S3ImageStore(S3Location(bucket.name, prefix), TTL, **options)


def our_name(index: int, suffix: str = ".png") -> str:
    """A name of the store's own form: img_ and 32 URL-safe characters."""
    return f"img_{index:032d}{suffix}"


# --- put and link ----------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "suffix"), [
    ("image/png", ".png"), ("image/jpeg", ".jpeg"), ("image/webp", ".webp")])
def test_a_link_fetches_the_exact_bytes_with_their_type(
    s3_bucket: S3Bucket, content_type: str, suffix: str
) -> None:
    store = make_store(s3_bucket)
    data = PNG + content_type.encode()

    key = store.put(data, content_type)
    url = store.link(key, base_url="http://ignored.example", now=time.time())

    assert key.startswith("img_") and key.endswith(suffix)
    assert url.startswith(f"{s3_bucket.endpoint_url}/{s3_bucket.name}/{key}?")
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(TTL)]
    fetched = httpx.get(url)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"] == content_type


def test_keys_are_unguessable(s3_bucket: S3Bucket) -> None:
    store = make_store(s3_bucket)
    keys = {store.put(PNG, "image/png") for _ in range(3)}
    assert len(keys) == 3
    assert all(len(key) >= len("img_") + 32 + len(".png") for key in keys)


@pytest.mark.parametrize("tamper", [
    lambda url: url.replace("X-Amz-Signature=", "X-Amz-Signature=0"),
    lambda url: url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"),
    lambda url: url.replace("/img_", "/img_x", 1),
], ids=["signature", "lifetime", "key"])
def test_a_changed_link_is_refused_by_the_server(
    s3_bucket: S3Bucket, tamper: Any
) -> None:
    store = make_store(s3_bucket)
    url = store.link(store.put(PNG, "image/png"), base_url="", now=time.time())

    refused = httpx.get(tamper(url))

    assert refused.status_code == 403
    assert PNG not in refused.content
    assert httpx.get(url).content == PNG


def test_images_go_under_the_prefix(s3_bucket: S3Bucket) -> None:
    store = make_store(s3_bucket, "tenant/images")

    key = store.put(PNG, "image/png")
    url = store.link(key, base_url="", now=time.time())

    assert key.startswith("tenant/images/img_")
    assert s3_bucket.keys() == [key]
    assert urlsplit(url).path == f"/{s3_bucket.name}/{key}"
    assert httpx.get(url).content == PNG


def test_a_store_refuses_types_it_cannot_serve(s3_bucket: S3Bucket) -> None:
    with pytest.raises(ValueError, match="cannot store 'text/html'"):
        make_store(s3_bucket).put(b"<p>", "text/html")
    assert s3_bucket.keys() == []


def test_the_aws_config_files_addressing_style_is_honoured(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Path-style is botocore's default for a custom endpoint (and the only style an IP
    address allows); ~/.aws/config's s3.addressing_style still chooses for a host name."""
    port = urlsplit(s3_bucket.endpoint_url).port
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://localhost:{port}")
    path_style = make_store(s3_bucket).link("img_a.png", base_url="", now=time.time())
    config = tmp_path / "aws-config"
    config.write_text("[default]\ns3 =\n    addressing_style = virtual\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    virtual = make_store(s3_bucket).link("img_a.png", base_url="", now=time.time())

    assert urlsplit(path_style).netloc == f"localhost:{port}"
    assert urlsplit(path_style).path == f"/{s3_bucket.name}/img_a.png"
    assert urlsplit(virtual).netloc == f"{s3_bucket.name}.localhost:{port}"
    assert urlsplit(virtual).path == "/img_a.png"


# --- failures --------------------------------------------------------------------------


def test_start_fails_with_a_readable_reason_for_a_missing_bucket(
    s3_bucket: S3Bucket
) -> None:
    store = S3ImageStore(S3Location("no-such-bucket", "x"), TTL)

    with pytest.raises(StorageUnavailable) as caught:
        asyncio.run(store.start())

    reason = caught.value.reason
    assert reason == (
        f"S3 storage s3://no-such-bucket/x (endpoint {s3_bucket.endpoint_url}) cannot be "
        "used: the bucket 'no-such-bucket' does not exist. Create it, or correct "
        "--storage-url or AWS_ENDPOINT_URL.")


def test_start_fails_with_a_readable_reason_without_credentials(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    with pytest.raises(StorageUnavailable, match="no complete AWS credentials were found"):
        asyncio.run(make_store(s3_bucket).start())


def test_a_put_to_an_unreachable_endpoint_is_storage_unavailable(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the standard variable; no retries here
    store = make_store(s3_bucket, "p")

    with pytest.raises(StorageUnavailable) as caught:
        store.put(PNG, "image/png")

    assert caught.value.retry_after > 0
    assert caught.value.reason.startswith(
        f"storing an image in s3://{s3_bucket.name}/p (endpoint {closed}) failed: the "
        "object store could not be reached.")
    assert SECRET_ACCESS_KEY not in caught.value.reason


def test_a_put_into_a_vanished_bucket_is_storage_unavailable(s3_bucket: S3Bucket) -> None:
    store = make_store(s3_bucket)
    s3_bucket.client.delete_bucket(Bucket=s3_bucket.name)

    with pytest.raises(StorageUnavailable, match="does not exist"):
        store.put(PNG, "image/png")


# --- sweeping --------------------------------------------------------------------------


def test_sweep_deletes_only_expired_images_under_the_prefix(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small pages and batches, so that paging and batching are exercised on few objects.
    monkeypatch.setattr(S3ImageStore, "LIST_PAGE", 2)
    monkeypatch.setattr(S3ImageStore, "DELETE_BATCH", 2)
    store = make_store(s3_bucket, "images")
    expired = [f"images/{our_name(i)}" for i in range(5)]
    fresh = f"images/{our_name(9, '.webp')}"
    not_ours = ["images/notes.txt", "images/img_nested/" + our_name(7),
                our_name(8), f"elsewhere/{our_name(6)}"]
    for key in (*expired, fresh, *not_ours):
        s3_bucket.put(key)
        s3_bucket.age(key, TTL + 1, NOW)
    s3_bucket.age(fresh, TTL - 1, NOW)
    batches: list[int] = []
    store.client.meta.events.register(
        "provide-client-params.s3.DeleteObjects",
        lambda params, **_: batches.append(len(params["Delete"]["Objects"])))

    removed = store.sweep(NOW)

    assert removed == 5
    assert s3_bucket.keys() == sorted([fresh, *not_ours])
    assert sorted(batches) == [1, 2, 2]


def test_delete_requests_carry_content_md5_for_s3_compatible_servers(
    s3_bucket: S3Bucket
) -> None:
    store = make_store(s3_bucket)
    key = store.put(PNG, "image/png")
    s3_bucket.age(key, TTL + 1, NOW)
    sent: list[tuple[bytes, str | bytes]] = []
    store.client.meta.events.register(
        "before-send.s3.DeleteObjects",
        lambda request, **_: sent.append((request.body, request.headers["Content-MD5"])))

    assert store.sweep(NOW) == 1

    [(body, md5)] = sent
    expected = base64.b64encode(hashlib.md5(body).digest())
    assert (md5 if isinstance(md5, bytes) else md5.encode()) == expected


def test_the_sweeper_runs_at_start_unless_turned_off(s3_bucket: S3Bucket) -> None:
    sweeping = make_store(s3_bucket, "a")
    idle = make_store(s3_bucket, "b", sweep=False)
    for store in (sweeping, idle):
        key = store.put(PNG, "image/png")
        s3_bucket.age(key, TTL + 1, time.time())

    async def start_both_until_a_is_swept() -> None:
        await asyncio.gather(sweeping.start(), idle.start())
        try:
            for _ in range(200):
                if not s3_bucket.keys("a/"):
                    break
                await asyncio.sleep(0.05)
        finally:
            await asyncio.gather(sweeping.stop(), idle.stop())

    asyncio.run(start_both_until_a_is_swept())

    assert s3_bucket.keys("a/") == []
    assert len(s3_bucket.keys("b/")) == 1


# --- the --storage-url setting ---------------------------------------------------------


@pytest.mark.parametrize(("url", "normalised", "location"), [
    ("s3://bucket", "s3://bucket", S3Location("bucket", "")),
    ("s3://bucket/", "s3://bucket", S3Location("bucket", "")),
    ("s3://my.bucket-1//images/2024/", "s3://my.bucket-1/images/2024",
     S3Location("my.bucket-1", "images/2024")),
])
def test_a_storage_url_is_normalised(url: str, normalised: str, location: S3Location) -> None:
    assert Settings(storage_url=url).storage_url == normalised
    assert parse_storage_url(normalised) == location


@pytest.mark.parametrize(("url", "message"), [
    ("https://bucket/x", "must look like s3://BUCKET[/PREFIX]"),
    ("bucket/x", "must look like s3://BUCKET[/PREFIX]"),
    ("s3:///x", "must look like s3://BUCKET[/PREFIX]"),
    ("s3://My_Bucket", "'My_Bucket' is not a valid S3 bucket name"),
    ("s3://ab", "'ab' is not a valid S3 bucket name"),
    ("s3://a..b", "'a..b' is not a valid S3 bucket name"),
    ("s3://192.168.1.1", "'192.168.1.1' is not a valid S3 bucket name"),
    ("s3://bucket:9000/x", "'bucket:9000' is not a valid S3 bucket name"),
    ("s3://AKIDSECRET:hunter2@bucket", "credentials do not belong in the storage URL"),
    ("s3://bucket/a//b", "must not have empty, '.' or '..' parts"),
    ("s3://bucket/a/../b", "must not have empty, '.' or '..' parts"),
    ("s3://bucket/x?region=eu", "takes no ?query or #fragment"),
])
def test_a_bad_storage_url_is_a_readable_configuration_error(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(storage_url=url)
    [error] = caught.value.errors()
    assert error["loc"] == ("storage_url",)
    assert message in error["msg"]
    assert "hunter2" not in error["msg"]


def test_without_boto3_the_setting_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ValidationError, match=r'pip install "diffuserve\[s3\]"'):
        Settings(storage_url="s3://bucket")
    with pytest.raises(ImportError, match=r'pip install "diffuserve\[s3\]"'):
        S3ImageStore(S3Location("bucket"), TTL)


def test_the_logged_summary_names_the_bucket(s3_bucket: S3Bucket) -> None:
    summary = Settings(storage_url=f"s3://{s3_bucket.name}/p/", storage_sweep=False
                       ).safe_summary()
    assert (summary["storage_url"], summary["storage_sweep"]) == (
        f"s3://{s3_bucket.name}/p", False)

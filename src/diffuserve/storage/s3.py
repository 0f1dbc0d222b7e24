"""Images as objects of an S3-compatible bucket, served by presigned links.

Endpoint, region, credentials, retries and addressing style are read where every AWS
tool reads them (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``…,
``~/.aws/config``): botocore resolves them, this module adds no settings of its own.
Expired images are deleted by the sweeper here, or by a lifecycle rule of the bucket
when the operator turns the sweeper off.

boto3 is imported only when a store is made: the core install runs without the ``s3``
extra, and the URL is parsed by :func:`diffuserve.config.urls.parse_storage_url`, which
needs nothing beyond the standard library (the settings check it without this module).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import time
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from diffuserve.config.urls import INSTALL_HINT, S3Location
from diffuserve.config.urls import parse_storage_url as parse_storage_url  # re-exported
from diffuserve.storage.base import StorageUnavailable, new_image_name, stop_sweeper

logger = logging.getLogger("diffuserve.storage")

#: What this store names its objects (below the prefix); nothing else is ever swept.
_NAME_RE = re.compile(r"^img_[A-Za-z0-9_-]{22,64}\.(png|jpeg|webp)$")
#: botocore waits 60 s for a connection, on each of its attempts: an unreachable store
#: would hold a start-up (or a request) for minutes.
CONNECT_TIMEOUT_SECONDS = 10.0


class S3Client(Protocol):
    """The part of boto3's S3 client this store uses (boto3 ships no types)."""

    meta: Any

    def head_bucket(self, **kwargs: Any) -> dict[str, Any]: ...

    def put_object(self, **kwargs: Any) -> dict[str, Any]: ...

    def generate_presigned_url(self, ClientMethod: str, Params: dict[str, Any],
                               ExpiresIn: int) -> str: ...

    def get_paginator(self, operation_name: str) -> Any: ...

    def delete_objects(self, **kwargs: Any) -> dict[str, Any]: ...


def make_client() -> S3Client:
    """An S3 client configured the AWS way (environment, ``~/.aws``), fit for S3-compatible
    servers too."""
    try:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    config = Config(
        signature_version="s3v4",
        # botocore 1.36+ puts CRC checksums on every upload and checks them on download;
        # S3-compatible servers (MinIO, Ceph, moto…) do not all know them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        # No `s3=` here: `addressing_style` then comes from ~/.aws/config as for any AWS
        # tool. botocore's default is path-style for a custom endpoint (an IP address
        # such as 127.0.0.1 can only be path-style) and virtual-host style on AWS.
    )
    # Our own session: boto3's module-level default one is shared mutable state.
    client: S3Client = boto3.session.Session().client("s3", config=config)
    client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)
    return client


def _add_content_md5(request: Any, **_: Any) -> None:
    """DeleteObjects with a Content-MD5 header, which S3-compatible servers that predate
    the CRC checksum botocore 1.36+ sends instead still demand; AWS accepts both."""
    body = request.body
    if isinstance(body, bytes) and "Content-MD5" not in request.headers:
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        request.headers["Content-MD5"] = base64.b64encode(digest).decode("ascii")


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class S3ImageStore:
    """Images as ``[PREFIX/]img_<random>.<ext>`` objects of one bucket.

    A link is a presigned GET that the bucket's server honours for ``ttl_seconds``; no
    request for an image reaches this server. An object's LastModified starts its life:
    the sweeper deletes it once that is ``ttl_seconds`` past (with ``sweep`` off, a
    lifecycle rule of the bucket is expected to).
    """

    #: DeleteObjects takes at most 1000 keys, ListObjectsV2 returns at most 1000.
    DELETE_BATCH = 1000
    LIST_PAGE = 1000

    def __init__(self, location: S3Location, ttl_seconds: int, *, sweep: bool = True,
                 sweep_interval: float = 60.0) -> None:
        self.location = location
        self.ttl_seconds = ttl_seconds
        self.sweeps = sweep
        self.sweep_interval = sweep_interval
        #: boto3's client (blocking, thread-safe).
        self.client = make_client()
        from botocore import exceptions  # type: ignore[import-untyped]  # boto3's own

        self._boto_errors: tuple[type[Exception], ...] = (
            exceptions.BotoCoreError, exceptions.ClientError)
        self._exceptions: Any = exceptions
        self._sweeper: asyncio.Task[None] | None = None

    # -- ImageStore --------------------------------------------------------------------

    async def start(self) -> None:
        """Fail now, with a readable reason, if the bucket cannot be reached; then sweep."""
        await asyncio.to_thread(self.check)
        if self.sweeps:
            self._sweeper = asyncio.create_task(self._sweep_forever(),
                                                name="diffuserve-s3-sweeper")

    async def stop(self) -> None:
        await stop_sweeper(self._sweeper)

    def put(self, data: bytes, content_type: str) -> str:
        key = f"{self.location.key_prefix}{new_image_name(content_type)}"
        try:
            self.client.put_object(Bucket=self.location.bucket, Key=key, Body=data,
                                    ContentType=content_type)
        except self._boto_errors as exc:
            raise StorageUnavailable(f"storing an image in {self._where()} failed: "
                                     f"{self._explain(exc)}") from None
        return key

    def link(self, key: str, *, base_url: str, now: float) -> str:
        # The bucket serves the link, so base_url plays no part; the signature's clock is
        # botocore's own (now, give or take the call).
        try:
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.location.bucket, "Key": key},
                ExpiresIn=self.ttl_seconds)
        except self._boto_errors as exc:
            raise StorageUnavailable(f"signing a link to {self._where()} failed: "
                                     f"{self._explain(exc)}") from None

    # -- checks and upkeep -------------------------------------------------------------

    def check(self) -> None:
        """:class:`StorageUnavailable`, saying why and what to change, unless the bucket
        can be reached with the credentials at hand. Blocking."""
        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except self._boto_errors as exc:
            raise StorageUnavailable(f"S3 storage {self._where()} cannot be used: "
                                     f"{self._explain(exc)}") from None

    def sweep(self, now: float | None = None) -> int:
        """Delete the images whose lifetime is over by ``now``; return how many went.
        Blocking; :class:`StorageUnavailable` if the bucket cannot be listed."""
        now = time.time() if now is None else now
        key_prefix = self.location.key_prefix
        expired: list[dict[str, str]] = []
        removed = 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=f"{key_prefix}img_",
                PaginationConfig={"PageSize": self.LIST_PAGE})
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"]
                    if _NAME_RE.match(key[len(key_prefix):]) \
                            and item["LastModified"].timestamp() + self.ttl_seconds < now:
                        expired.append({"Key": key})
                    if len(expired) == self.DELETE_BATCH:
                        removed += self._delete(expired)
                        expired = []
            if expired:
                removed += self._delete(expired)
        except self._boto_errors as exc:
            raise StorageUnavailable(f"sweeping {self._where()} failed: "
                                     f"{self._explain(exc)}") from None
        return removed

    def _delete(self, batch: list[dict[str, str]]) -> int:
        response = self.client.delete_objects(
            Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors", [])
        if errors:
            # Counted and named by code only: the next sweep tries them again.
            logger.warning("some expired images could not be deleted", extra={"fields": {
                "failed": len(errors), "codes": sorted({e.get("Code", "?") for e in errors})}})
        return len(batch) - len(errors)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await asyncio.to_thread(self.sweep, time.time())
                if removed:
                    logger.info("swept expired images", extra={"fields": {"removed": removed}})
            except StorageUnavailable as exc:
                logger.warning("sweeping expired images failed",
                               extra={"fields": {"error": exc.reason}})
            except Exception:
                # An answer this code did not expect (from an S3-compatible server): the
                # sweeper must outlive it, and the next round may do better.
                logger.exception("sweeping expired images failed")
            await asyncio.sleep(self.sweep_interval)

    # -- readable failures -------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.location} (endpoint {_without_userinfo(self.client.meta.endpoint_url)})"

    def _explain(self, exc: Exception) -> str:
        """What went wrong, and what to change, without a credential or a signature."""
        errors = self._exceptions
        bucket = self.location.bucket
        if isinstance(exc, errors.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("404", "NoSuchBucket"):
                return (f"the bucket {bucket!r} does not exist. Create it, or correct "
                        "--storage-url or AWS_ENDPOINT_URL.")
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return (f"access to the bucket {bucket!r} was denied ({code}). Check the "
                        "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) "
                        "and the bucket's policy.")
            if code in ("301", "PermanentRedirect", "AuthorizationHeaderMalformed"):
                return (f"the bucket {bucket!r} is in another region ({code}). Set "
                        "AWS_DEFAULT_REGION to the bucket's region.")
            return f"the object store answered {code or 'an error'}: {error.get('Message', '')}"
        if isinstance(exc, errors.NoCredentialsError | errors.PartialCredentialsError):
            return ("no complete AWS credentials were found. Set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE.")
        if isinstance(exc, errors.ConnectionError):
            return ("the object store could not be reached. Is it running, and are "
                    "AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) and the network right?")
        # Other botocore errors describe the call, not the secrets it was signed with.
        return f"{type(exc).__name__}: {exc}"

"""A loopback S3 server for the storage tests: moto's, with presigned links checked.

moto answers the S3 API on a loopback port but accepts any presigned link, however its
signature was changed. Real S3, MinIO and Ceph refuse those, so the server here puts
the SigV4 query-signature check in front of moto, written from AWS's specification
(not with botocore, which signs the links under test), with the links' expiry.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

import boto3
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends
from werkzeug.serving import make_server

REGION = "us-east-1"
#: Fake credentials the server knows; they never leave the loopback interface.
ACCESS_KEY_ID = "AKIDDIFFUSERVETEST01"
SECRET_ACCESS_KEY = "diffuserve-test-secret-access-key-0123456789"
#: AWS_* variables a developer's machine may set that would steer a test elsewhere.
FOREIGN_AWS_VARIABLES = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE",
    "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def presigned_signature(method: str, raw_path: str, query: list[tuple[str, str]],
                        headers: dict[str, str], secret: str) -> str:
    """The SigV4 signature of a presigned request (``query`` without X-Amz-Signature)."""
    params = dict(query)
    signed = params["X-Amz-SignedHeaders"].split(";")
    canonical = "\n".join([
        method,
        raw_path,
        "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query)),
        "".join(f"{name}:{headers[name].strip()}\n" for name in signed),
        ";".join(signed),
        "UNSIGNED-PAYLOAD",
    ])
    _key_id, date, region, service, terminal = params["X-Amz-Credential"].split("/")
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", params["X-Amz-Date"], f"{date}/{region}/{service}/{terminal}",
        hashlib.sha256(canonical.encode()).hexdigest(),
    ])
    key = _hmac(f"AWS4{secret}".encode(), date)
    for part in (region, service, terminal):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class PresignedLinkCheck:
    """WSGI middleware: a request carrying X-Amz-Signature in its query is passed on only
    if that signature is right for its method, path, query and host, and not expired."""

    def __init__(self, app: WsgiApp, secret: str) -> None:
        self.app = app
        self.secret = secret

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        given = [value for name, value in query if name == "X-Amz-Signature"]
        if not given:
            return self.app(environ, start_response)
        rest = [(name, value) for name, value in query if name != "X-Amz-Signature"]
        params = dict(rest)
        raw_path = environ.get("RAW_URI", environ["PATH_INFO"]).split("?", 1)[0]
        headers = {"host": environ.get("HTTP_HOST", "")}
        try:
            expected = presigned_signature(environ["REQUEST_METHOD"], raw_path, rest,
                                           headers, self.secret)
            signed_at = datetime.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
            expires = signed_at.replace(tzinfo=datetime.UTC).timestamp() \
                + int(params["X-Amz-Expires"])
        except (KeyError, ValueError):
            return _refuse(start_response, "AuthorizationQueryParametersError",
                           "the presigned query is malformed")
        if not hmac.compare_digest(expected, given[0]):
            return _refuse(start_response, "SignatureDoesNotMatch",
                           "The request signature we calculated does not match")
        if expires < time.time():
            return _refuse(start_response, "AccessDenied", "Request has expired")
        return self.app(environ, start_response)


def _refuse(start_response: StartResponse, code: str, message: str) -> list[bytes]:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                     ("Content-Length", str(len(body)))])
    return [body]


class CheckingMotoServer(ThreadedMotoServer):
    """moto's threaded server with :class:`PresignedLinkCheck` in front of it."""

    def _server_entry(self) -> None:
        app = PresignedLinkCheck(DomainDispatcherApplication(create_backend_app),
                                 SECRET_ACCESS_KEY)
        self._server = make_server(self._ip_address, self._port, app, True,
                                   request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


@dataclass
class S3Bucket:
    """A fresh bucket of the loopback server, and the environment that points AWS
    clients at it."""

    name: str
    endpoint_url: str
    client: Any
    env: dict[str, str] = field(default_factory=dict)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def put(self, key: str, body: bytes = b"x") -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=body)

    def age(self, key: str, seconds: float, now: float) -> None:
        """Make ``key`` look ``seconds`` old at ``now`` (its LastModified moved back).

        The server runs in this process: its object is changed in place, as os.utime
        would change a file's mtime."""
        stored = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[self.name].keys.get(key)
        assert stored is not None, key
        # moto keeps naive UTC times.
        stored.last_modified = datetime.datetime.fromtimestamp(
            now - seconds, datetime.UTC).replace(tzinfo=None)


@dataclass
class MotoS3:
    """The running loopback server, and a client of its own to set up buckets (one for
    the session: a boto3 client takes a noticeable time to make)."""

    endpoint_url: str
    client: Any = None

    def __post_init__(self) -> None:
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY)

    def env(self) -> dict[str, str]:
        """AWS_* variables for this server and its fake credentials; a developer's own
        AWS configuration files are kept out."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/nonexistent/diffuserve-tests/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/diffuserve-tests/aws-credentials",
            # Without credentials botocore would ask the EC2 metadata address next: tests
            # send nothing beyond loopback.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def new_bucket(self) -> S3Bucket:
        name = f"test-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return S3Bucket(name, self.endpoint_url, self.client, self.env())


@contextmanager
def running_moto_s3() -> Iterator[MotoS3]:
    """moto's S3 server on a loopback port the system picks (no race for a free one)."""
    server = CheckingMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield MotoS3(f"http://{host}:{port}")
    finally:
        server.stop()

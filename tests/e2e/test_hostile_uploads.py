"""Hostile and broken uploads against a live server with a real (tiny) pipeline: refused
before they are decoded, a 400 naming the field for any file that does not decode, and
the server's memory and connections none the worse."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.live_server import LiveServer, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[LiveServer]:
    live = start_server(["--model", f"tiny={tiny_models['sd']}"],
                        tmp_path_factory.mktemp("hostile"))
    yield live
    live.stop()


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bad_exif(fmt: str = "PNG", mode: str = "RGB") -> bytes:
    return encoded(Image.new(mode, (64, 64)), fmt, exif=b"Exif\x00\x00not tiff data at all")


def peak_rss_mib(server: LiveServer) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


GOOD = encoded(Image.new("RGB", (64, 64), (200, 30, 30)))


@pytest.mark.parametrize(("route", "files", "data", "param"), [
    ("edits", {"image": bad_exif()}, {"model": "gpt-image-1"}, "image"),
    ("edits", {"image[]": bad_exif("WEBP")}, {"model": "gpt-image-1"}, "image[0]"),
    ("edits", {"image": GOOD, "mask": bad_exif(mode="RGBA")}, {"model": "gpt-image-1"},
     "mask"),
    ("edits", {"image": GOOD, "markup": bad_exif(mode="RGBA")}, {"model": "gpt-image-1"},
     "markup"),
    ("variations", {"image": bad_exif()}, {"model": "dall-e-2"}, "image"),
])
def test_a_bad_exif_block_is_a_400_naming_the_field_and_the_connection_goes_on(
    server: LiveServer, route: str, files: dict[str, bytes], data: dict[str, str],
    param: str
) -> None:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        if route == "edits":
            data = {**data, "prompt": "x"}
        response = client.post(f"/v1/images/{route}", data=data, files={
            name: ("a.png", content, "image/png") for name, content in files.items()})
        assert response.status_code == 400, response.text
        assert response.headers["x-request-id"].startswith("req_")
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, "invalid_image")
        assert client.get("/health").status_code == 200  # the same connection


def test_a_bad_exif_block_in_a_json_edit_is_a_400(server: LiveServer) -> None:
    url = "data:image/png;base64," + base64.b64encode(bad_exif()).decode()
    response = httpx.post(f"{server.base_url}/v1/images/edits", timeout=60, json={
        "model": "gpt-image-1", "prompt": "x", "images": [{"image_url": url}]})
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (
        "images[0]", "invalid_image")


def test_sixteen_huge_images_are_refused_before_any_is_decoded(server: LiveServer) -> None:
    # Sixteen flat 6320x6320 PNGs (40 MP each, ~120 KB): decoding them all would hold
    # 2.5 GB of RGBA pixels; before this server read headers first it held 4.7 GB more.
    huge = encoded(Image.new("RGB", (6320, 6320), (200, 30, 30)))
    before = peak_rss_mib(server)
    for _ in range(3):
        response = httpx.post(f"{server.base_url}/v1/images/edits", timeout=120,
                              data={"prompt": "x", "model": "gpt-image-1"},
                              files=[("image[]", (f"{i}.png", huge, "image/png"))
                                     for i in range(16)])
        assert response.status_code == 400
        assert response.json()["error"]["code"] in ("image_too_large", "too_many_images")
    assert peak_rss_mib(server) - before < 200

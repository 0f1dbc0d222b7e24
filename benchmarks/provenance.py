"""What content provenance costs, and how well the watermark holds.

Cost, per output format at 1024² (a photo-like picture and the built-in model's
artwork): milliseconds the watermark and the signed C2PA manifest add to an image
(medians of ``--repeats``, on the thread that encodes), against the encoding itself,
and bytes the manifest adds to the file.

Detection: the share of marked images whose watermark is read after their metadata is
stripped and their pixels re-encoded as JPEG quality 85 at the same size — photo-like
pictures (1/f² colour noise, ``--photos`` seeds at 512² and 1024²), the two photographs
scikit-learn ships (china.jpg, flower.jpg: 512×384 crops) where it is installed, and the
built-in model's output (``--drawings`` prompts×seeds at 256² and 1024², drawn by a
``diffuserve serve --no-provenance`` process, marked here as the server marks them) —
and the share of the same images unmarked that read as marked (false positives).

    python benchmarks/provenance.py [--repeats 10] [--photos 20] [--drawings 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffuserve.service import watermark  # noqa: E402
from diffuserve.service.credentials import kept_identity  # noqa: E402
from diffuserve.service.output import encode  # noqa: E402
from diffuserve.service.provenance import Marking, Provenance  # noqa: E402
from tests.support.live_server import start_server  # noqa: E402
from tests.support.provenance import photo_like, reencoded  # noqa: E402

FORMATS = ("png", "jpeg", "webp")
SUBJECTS = ("a red apple", "a smiling cat", "a rocket", "a birthday cake", "a sunflower",
            "a blue car", "a ghost", "a pizza slice", "a snowman", "a heart")


def median_ms(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def cost(marker: Provenance, picture: Image.Image, repeats: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    mark = Marking(model="benchmark", when=time.time())
    marked = marker.watermark([picture])[0]
    watermark_ms = median_ms(lambda: marker.watermark([picture]), repeats)
    for fmt in FORMATS:
        data = encode(marked, fmt)
        signed = marker.sign(data, fmt, mark)
        rows[fmt] = {
            "encode_ms": median_ms(lambda fmt=fmt: encode(marked, fmt), repeats),
            "watermark_ms": watermark_ms,
            "sign_ms": median_ms(lambda fmt=fmt, data=data: marker.sign(data, fmt, mark),
                                 repeats),
            "file_bytes": len(data),
            "manifest_bytes": len(signed) - len(data),
        }
        rows[fmt]["added_ms"] = round(rows[fmt]["watermark_ms"] + rows[fmt]["sign_ms"], 2)
    return rows


def detection(payload: Any, pictures: list[Image.Image]) -> dict[str, Any]:
    """Shares detected: marked then stripped and re-encoded as JPEG q85; the served
    lossy formats as they are; the pictures unmarked (false positives)."""
    def read(data: bytes) -> bool:
        with Image.open(io.BytesIO(data)) as image:
            return watermark.read(image.convert("RGB"), payload).detected

    marked = [watermark.embed(picture, payload) for picture in pictures]
    return {
        "images": len(pictures),
        "jpeg85_after_stripping": sum(read(reencoded(encode(m, "png"))) for m in marked)
        / len(marked),
        "served_jpeg": sum(read(encode(m, "jpeg")) for m in marked) / len(marked),
        "served_webp": sum(read(encode(m, "webp")) for m in marked) / len(marked),
        "unmarked_read_as_marked": sum(read(encode(p, "png")) for p in pictures)
        / len(pictures),
    }


def photographs() -> list[Image.Image]:
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        return []
    crops = []
    for array in load_sample_images().images:
        photo = Image.fromarray(array)
        for left, top in ((0, 0), (128, 43), (64, 20), (100, 0)):
            crops.append(photo.crop((left, top, left + 512, top + 384)))
    return crops


def drawings(count: int, sizes: tuple[str, ...]) -> dict[str, list[Image.Image]]:
    """The built-in model's pictures, unmarked, by size."""
    found: dict[str, list[Image.Image]] = {size: [] for size in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(["--no-provenance"], Path(tmp), timeout=300)
        try:
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none",
                                   max_retries=0, timeout=300)
            for index in range(count):
                subject = SUBJECTS[index % len(SUBJECTS)]
                for size in sizes:
                    result = client.images.generate(
                        model="dall-e-2", prompt=subject, size=size,  # type: ignore[arg-type]
                        response_format="b64_json", extra_body={"seed": index})
                    data = base64.b64decode(result.data[0].b64_json or "")
                    with Image.open(io.BytesIO(data)) as image:
                        found[size].append(image.convert("RGB"))
        finally:
            server.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--drawings", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        identity = kept_identity(Path(tmp), create=True)
    assert identity is not None
    marker = Provenance(identity)
    drawn = drawings(args.drawings, ("256x256", "1024x1024"))
    report: dict[str, Any] = {
        "cost_1024_photo_like": cost(marker, photo_like(1024, 1024, seed=1), args.repeats),
        "cost_1024_builtin": cost(marker, drawn["1024x1024"][0], args.repeats),
        "cost_256_builtin": cost(marker, drawn["256x256"][0], args.repeats),
        "detection": {
            "photo_like_512": detection(marker.payload, [
                photo_like(512, 512, seed) for seed in range(args.photos)]),
            "photo_like_1024": detection(marker.payload, [
                photo_like(1024, 1024, seed) for seed in range(args.photos)]),
            "builtin_256": detection(marker.payload, drawn["256x256"]),
            "builtin_1024": detection(marker.payload, drawn["1024x1024"]),
        },
    }
    photos = photographs()
    if photos:
        report["detection"]["photographs_512x384"] = detection(marker.payload, photos)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

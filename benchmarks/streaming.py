"""Streaming's cost: time to the first partial image, and total time, vs not streaming.

Serves the built-in model (or ``--model PATH``) with ``diffuserve serve`` on a loopback
port and times ``--requests`` generations each way through the openai SDK, alternating
so that both see the same load: ``stream=False``; ``stream=True`` with
``--partial-images`` previews. Prints medians and ratios, and with ``--sheet PATH``
writes the partial images and the final one of the first streamed request side by side.

    python benchmarks/streaming.py [--requests 10] [--partial-images 3] [--size 256x256]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.support.live_server import start_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--partial-images", type=int, default=3)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--prompt", default="a rocket")
    parser.add_argument("--model", type=Path, help="a local diffusers pipeline folder")
    parser.add_argument("--sheet", type=Path, help="write the first stream's images here")
    args = parser.parse_args()

    import openai
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        server_args = ["--model", f"bench={args.model}"] if args.model else []
        server = start_server(server_args, Path(tmp))
        try:
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x",
                                   max_retries=0)
            plain: list[float] = []
            first: list[float] = []
            streamed: list[float] = []
            for i in range(args.requests + 1):
                started = time.perf_counter()
                client.images.generate(model="gpt-image-2", prompt=args.prompt,
                                       size=args.size, extra_body={"seed": i})
                plain_seconds = time.perf_counter() - started
                started = time.perf_counter()
                first_seconds = None
                pictures = []
                for event in client.images.generate(
                        model="gpt-image-2", prompt=args.prompt, size=args.size, stream=True,
                        partial_images=args.partial_images, extra_body={"seed": i}):
                    if first_seconds is None:
                        first_seconds = time.perf_counter() - started
                    pictures.append(base64.b64decode(event.b64_json))
                stream_seconds = time.perf_counter() - started
                if i == 0:  # warm-up; its pictures make the sheet
                    if args.sheet:
                        images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pictures]
                        sheet = Image.new("RGB", (sum(im.width for im in images) + 8 * (
                            len(images) - 1), images[0].height), "white")
                        x = 0
                        for image in images:
                            sheet.paste(image, (x, 0))
                            x += image.width + 8
                        sheet.save(args.sheet)
                    continue
                plain.append(plain_seconds)
                first.append(first_seconds or stream_seconds)
                streamed.append(stream_seconds)
        finally:
            server.stop()

    p, f, s = (statistics.median(v) for v in (plain, first, streamed))
    print(f"model: {args.model or 'built-in'}  size: {args.size}  partial images: "
          f"{args.partial_images}  requests: {args.requests}")
    print(f"not streamed, median total:      {p * 1000:8.1f} ms")
    print(f"streamed, median first partial:  {f * 1000:8.1f} ms ({f / p:.2f}x of not streamed)")
    print(f"streamed, median total:          {s * 1000:8.1f} ms ({s / p:.2f}x of not streamed)")


if __name__ == "__main__":
    main()

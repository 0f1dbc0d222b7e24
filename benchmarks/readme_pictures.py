"""The README's pictures of what the server draws, edits and streams, made the way a user
makes them: ``diffuserve serve`` on the built-in model (``--pipeline``, the shipped one
by default), driven with the official openai SDK, seeds fixed.

- ``builtin-stream.png``: "a rocket", streamed with 3 partial images, and the finished
  image;
- ``builtin-edit.png``: "a red apple", a mask whose top half is clear, the edit "a green
  apple" and two variations.

The grid, the variety sheet and the transparent sheet come from
``benchmarks/builtin_quality.py``.

    python benchmarks/readme_pictures.py [--pipeline DIR] [--out docs]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builtin_speed import models_file  # noqa: E402

from diffuserve import builtin  # noqa: E402
from tests.support.live_server import start_server  # noqa: E402

SIDE = 256
#: The checkerboard a transparent mask is shown on.
CHECKER = (204, 204, 204), (255, 255, 255)


def decoded(payload: str | None) -> Image.Image:
    assert payload, "no b64_json in the answer"
    with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
        return image.convert("RGBA")


def png(image: Image.Image) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def on_checkerboard(image: Image.Image, square: int = 16) -> Image.Image:
    board = Image.new("RGBA", image.size, CHECKER[1] + (255,))
    for top in range(0, image.height, square):
        for left in range(0, image.width, square):
            if (top // square + left // square) % 2 == 0:
                board.paste(CHECKER[0] + (255,), (left, top, left + square, top + square))
    board.alpha_composite(image.convert("RGBA"))
    return board


def strip(images: list[Image.Image], path: Path) -> None:
    sheet = Image.new("RGB", (SIDE * len(images), SIDE), (255, 255, 255))
    for index, image in enumerate(images):
        sheet.paste(on_checkerboard(image.resize((SIDE, SIDE))).convert("RGB"),
                    (index * SIDE, 0))
    sheet.save(path, optimize=True)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=builtin.WEIGHTS_DIR)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args()
    import openai

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(["--models-file", str(models_file(args.pipeline, Path(tmp)))],
                              Path(tmp), timeout=300)
        try:
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x",
                                   max_retries=0, timeout=600)
            stream = client.images.generate(model="gpt-image-1", prompt="a rocket",
                                            size="1024x1024", stream=True, partial_images=3,
                                            extra_body={"seed": 3})
            frames = [decoded(event.b64_json) for event in stream]
            strip(frames, args.out / "builtin-stream.png")

            apple = decoded(client.images.generate(
                model="gpt-image-1", prompt="a red apple", size="1024x1024",
                extra_body={"seed": 1}).data[0].b64_json).convert("RGB")
            mask = Image.new("RGBA", apple.size, (0, 0, 0, 255))
            mask.paste((0, 0, 0, 0), (0, 0, apple.width, apple.height // 2))
            edit = client.images.edit(model="gpt-image-1", image=("apple.png", png(apple)),
                                      mask=("mask.png", png(mask)), prompt="a green apple",
                                      extra_body={"seed": 2})
            variations = client.images.create_variation(
                model="dall-e-2", image=("apple.png", png(apple)), n=2,
                response_format="b64_json", extra_body={"seed": 4})
            strip([apple, mask, decoded(edit.data[0].b64_json),  # type: ignore[index]
                   *(decoded(item.b64_json) for item in variations.data or [])],
                  args.out / "builtin-edit.png")
        finally:
            server.stop()


if __name__ == "__main__":
    main()

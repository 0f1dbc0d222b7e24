"""A diffusers pipeline whose cost per step is set, to measure the server around it.

``StepCostPipeline`` does what a GPU pipeline looks like from the host: each denoising
step holds the GIL for ``python_ms`` (the Python that launches a step's kernels) and
then waits ``step_ms + image_step_ms × (images − 1)`` with the GIL released (the
device computing; a batch costs more than one image, but less than that many calls). It
calls ``callback_on_step_end`` like any diffusers pipeline, and returns smooth random
pictures of the requested size from each image's generator (they compress as photos
do). Its weights are nothing, so it loads instantly.

    python benchmarks/step_cost.py write DIR [--step-ms 21 --python-ms 5 ...]
    python benchmarks/step_cost.py serve --model bench=DIR [serve options]

``serve`` is ``diffuserve serve`` with this pipeline class known to the diffusers backend.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image


def hold_gil(milliseconds: float) -> None:
    """Pure-Python work for ``milliseconds`` (it never releases the GIL)."""
    end = time.perf_counter() + milliseconds / 1000
    while time.perf_counter() < end:
        pass


class StepCostPipeline(DiffusionPipeline):
    """Denoising steps of a set cost; see the module docstring."""

    def __init__(self, scheduler: Any, step_ms: float = 21.0, image_step_ms: float = 2.5,
                 python_ms: float = 5.0) -> None:
        super().__init__()
        self.register_modules(scheduler=scheduler)
        self.register_to_config(step_ms=step_ms, image_step_ms=image_step_ms,
                                python_ms=python_ms)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], height: int = 512, width: int = 512,
                 num_inference_steps: int = 25, guidance_scale: float = 7.5,
                 negative_prompt: str | list[str] | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: str = "pil", callback_on_step_end: Any = None,
                 return_dict: bool = True) -> Any:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        generators = generator if isinstance(generator, list) else [generator] * len(prompts)
        latents = torch.stack([torch.randn((3, max(1, height // 32), max(1, width // 32)),
                                           generator=g) for g in generators])
        config = self.config
        wait = (config.step_ms + config.image_step_ms * (len(prompts) - 1)) / 1000
        for step in range(num_inference_steps):
            hold_gil(config.python_ms)
            time.sleep(wait)
            if callback_on_step_end is not None:
                callback_on_step_end(self, step, step, {"latents": latents})
        images = []
        for sample in latents:
            small = ((sample.clamp(-2, 2) + 2) * 63.75).to(torch.uint8).permute(1, 2, 0)
            picture = Image.fromarray(small.numpy()).resize((width, height),
                                                            Image.Resampling.BICUBIC)
            noise = np.random.default_rng(int(sample.abs().sum() * 1000)).integers(
                -6, 7, (height, width, 3))
            pixels = (np.asarray(picture, np.int16) + noise).clip(0, 255).astype(np.uint8)
            images.append(Image.fromarray(pixels))
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def write(folder: Path, **config: float) -> Path:
    """A loadable pipeline folder (``model_index.json`` and a scheduler)."""
    StepCostPipeline(DDIMScheduler(), **config).save_pretrained(folder)
    return folder


#: A folder holding an installed distribution's metadata that registers
#: ``StepCostPipeline`` in the ``diffuserve.pipelines`` entry-point group.
PLUGINS = Path(__file__).resolve().parent / "plugins"


def register() -> None:
    """Make the diffusers backend load ``StepCostPipeline`` folders, as it loads the
    project's own pipelines: through the entry point :data:`PLUGINS` declares, found
    once that folder is on ``sys.path``."""
    if str(PLUGINS) not in sys.path:
        sys.path.append(str(PLUGINS))


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        register()
        from diffuserve.cli import main as diffuserve_main

        return diffuserve_main(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["write"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--step-ms", type=float, default=21.0)
    parser.add_argument("--image-step-ms", type=float, default=2.5)
    parser.add_argument("--python-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    write(args.folder, step_ms=args.step_ms, image_step_ms=args.image_step_ms,
          python_ms=args.python_ms)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main(sys.argv[1:]))

"""Per-family adapters: what differs between the model families the diffusers backend
serves, each in a small class chosen from the loaded pipeline's class.

- :mod:`.base`: what an adapter says (:class:`Family`), and the generic adapter that
  any pipeline of no listed family gets (SD 1.x, SDXL, the built-in model…);
- :mod:`.flux`: FLUX.1 (dev, schnell, Fill, Kontext) and FLUX.2 (dev, klein);
- :mod:`.sd3`: Stable Diffusion 3 and 3.5;
- :mod:`.qwen`: Qwen-Image, Qwen-Image-Edit and Qwen-Image-Edit-Plus;
- :mod:`.z_image`: Z-Image.

Another family is one class here and one line in :data:`FAMILIES`.
"""

from __future__ import annotations

from typing import Any

from diffuserve.engine.backends.diffusers.families.base import (
    Editor,
    Family,
    Route,
    accepted_by,
)
from diffuserve.engine.backends.diffusers.families.flux import (
    Flux1,
    Flux1Fill,
    Flux1Kontext,
    Flux2,
    Flux2Klein,
)
from diffuserve.engine.backends.diffusers.families.qwen import (
    QwenImage,
    QwenImageEdit,
    QwenImageEditPlus,
)
from diffuserve.engine.backends.diffusers.families.sd3 import StableDiffusion3
from diffuserve.engine.backends.diffusers.families.z_image import ZImage

__all__ = ["FAMILIES", "Editor", "Family", "Route", "accepted_by", "family_of"]

#: diffusers' pipeline class name → its family's adapter. A subclass of a listed class
#: gets the adapter of the nearest listed class it derives from.
FAMILIES: dict[str, type[Family]] = {
    "FluxPipeline": Flux1,
    "FluxFillPipeline": Flux1Fill,
    "FluxKontextPipeline": Flux1Kontext,
    "Flux2Pipeline": Flux2,
    "Flux2KleinPipeline": Flux2Klein,
    "StableDiffusion3Pipeline": StableDiffusion3,
    "QwenImagePipeline": QwenImage,
    "QwenImageEditPipeline": QwenImageEdit,
    "QwenImageEditPlusPipeline": QwenImageEditPlus,
    "ZImagePipeline": ZImage,
}


def family_of(pipeline: Any) -> Family:
    """The adapter for the loaded ``pipeline``, from its class (the generic one for a
    class of no listed family)."""
    for cls in type(pipeline).__mro__:
        family = FAMILIES.get(cls.__name__)
        if family is not None and cls.__module__.startswith("diffusers."):
            return family.of(pipeline)
    return Family.of(pipeline)

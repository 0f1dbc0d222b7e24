"""Edits and variations: which of a model's edit pipelines draws an edit, and the images
it is given. The family adapter says which pipelines edit and how they take images
(:mod:`.families`); this module chooses among them for each edit.

Three kinds of edit, by what the pipelines can do: inpainting (an image and its mask),
image to image (an image redrawn by a prompt: variations too) and instruction edits (an
image, or several, and an instruction). A mask goes to an inpainting pipeline; where the
family has none (FLUX.2 dev, Qwen-Image-Edit-Plus), or none for that many images, to an
instruction edit, whose unmasked pixels the service keeps (OpenAI's rule: the mask
applies to the first image).
"""

from __future__ import annotations

from typing import Any

from diffuserve.engine.backends.diffusers.families import Editor, Family, Route, family_of
from diffuserve.engine.errors import UnsupportedTask
from diffuserve.engine.types import GenerationParams


def edit_pipelines(pipeline: Any, family: Family | None = None) -> dict[Route, Editor]:
    """The pipelines that edit for ``pipeline``, by route (its own family's unless
    ``family`` is given)."""
    return (family or family_of(pipeline)).editors(pipeline)


def choose_editor(editors: dict[Route, Editor], params: GenerationParams,
                  model: str) -> Editor:
    """The editor that draws ``params``' edit; :class:`UnsupportedTask` when the model
    has none for it (the engine refuses edits and variations of models without editors
    before they are queued: this is the finer refusal)."""
    images = 1 + len(params.references)
    masked = params.mask is not None
    routes = (Route.INPAINT, Route.INSTRUCT) if masked else (Route.INSTRUCT, Route.IMAGE)
    candidates = [editors[route] for route in routes if route in editors]
    for editor in candidates:
        if images <= editor.max_images:
            return editor
    if not candidates:
        raise UnsupportedTask(model, "edits with a mask" if masked else "edits without a mask")
    most = max(editor.max_images for editor in candidates)
    raise UnsupportedTask(model, f"{'masked ' if masked else ''}edits of more than "
                                 f"{most} image{'s' if most > 1 else ''}")


def edit_inputs(family: Family, editor: Editor, params: GenerationParams, count: int,
                draw_size: tuple[int, int]) -> dict[str, Any]:
    """The arguments that make a call of ``count`` images drawn at ``draw_size`` the
    edit of ``params`` by ``editor``."""
    return family.edit_inputs(editor, params, count, draw_size)

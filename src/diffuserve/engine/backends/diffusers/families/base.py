"""What every family adapter says, and what a pipeline of no listed family does: the
Stable Diffusion 1.x/SDXL shape (4-D latents scaled by the VAE's ``scaling_factor``,
real classifier-free guidance, image-to-image and inpainting through diffusers'
``from_pipe``), which the built-in model and any unlisted pipeline follow too."""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from PIL import Image

from diffuserve.engine.resolution import fit_to_size
from diffuserve.engine.types import GenerationParams, ModelDefaults, TaskKind

logger = logging.getLogger(__name__)


class Route(StrEnum):
    """How an edit pipeline takes its images."""

    #: ``image`` and ``mask_image`` (white: redraw) and ``strength``: the masked area
    #: redrawn, the rest kept by the pipeline itself.
    INPAINT = "inpaint"
    #: ``image`` and ``strength``: the whole image drawn again from it (image to image).
    IMAGE = "image"
    #: ``image`` (one, or a list: the first and its references) and an instruction as the
    #: prompt; no strength. With a mask, the service keeps the unmasked pixels.
    INSTRUCT = "instruct"


@dataclass(frozen=True)
class Editor:
    """A pipeline that edits (the loaded one, or a variant sharing its weights)."""

    pipeline: Any
    route: Route
    #: Images one call takes: the first and its references.
    max_images: int = 1
    #: Images one call draws at most (pipelines that take one prompt at a time: 1).
    max_batch: int | None = None
    #: False: the images go as they were sent (a pipeline that edits itself at its own
    #: scale); True: each is fitted to the size drawn first.
    fits_inputs: bool = True


def accepted_by(pipeline: Any) -> frozenset[str] | None:
    """The argument names ``pipeline.__call__`` takes; None when it takes any."""
    cls: Any = type(pipeline)
    return _accepted_by_class(cls)


@cache
def _accepted_by_class(cls: Any) -> frozenset[str] | None:
    parameters = inspect.signature(cls.__call__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return frozenset(parameters) - {"self"}


def call_default(pipeline: Any, name: str) -> Any:
    """The default of argument ``name`` of ``pipeline.__call__`` (None if it has none)."""
    parameter = inspect.signature(pipeline.__call__).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def variant(pipeline: Any, class_name: str) -> Any:
    """diffusers' ``class_name`` over ``pipeline``'s weights (``from_pipe``), or None
    where that fails (logged: a listed family's variant should always build)."""
    import diffusers

    try:
        editor = getattr(diffusers, class_name).from_pipe(pipeline)
    except Exception as exc:
        logger.warning("edit pipeline unavailable", extra={"fields": {
            "pipeline": type(pipeline).__name__, "variant": class_name,
            "error": f"{type(exc).__name__}: {exc}"}})
        return None
    editor.set_progress_bar_config(disable=True)
    return editor


def variant_editors(pipeline: Any, inpaint: str, image: str) -> dict[Route, Editor]:
    """The family's inpainting (``inpaint``) and image-to-image (``image``) pipelines
    over ``pipeline``'s weights, each where it builds."""
    editors = {}
    for route, class_name in ((Route.INPAINT, inpaint), (Route.IMAGE, image)):
        editor = variant(pipeline, class_name)
        if editor is not None:
            editors[route] = Editor(editor, route)
    return editors


def packed_grid(tokens: int, width: int, height: int) -> tuple[int, int]:
    """The rows and columns of a packed latent sequence of ``tokens`` tokens drawn at
    about ``width``×``height``'s shape: of the factorisations of ``tokens``, the one
    nearest that aspect ratio (a pipeline may round the size it draws at, or choose its
    own from an input image)."""
    aspect = width / height
    best: tuple[float, int, int] | None = None
    for rows in range(1, math.isqrt(tokens) + 1):
        if tokens % rows:
            continue
        for r, c in ((rows, tokens // rows), (tokens // rows, rows)):
            score = abs(math.log((c / r) / aspect))
            if best is None or score < best[0]:
                best = (score, r, c)
    assert best is not None
    return best[1], best[2]


def unpack_2x2(latents: Any, rows: int, columns: int) -> Any:
    """FLUX.1's and Qwen-Image's packing undone: ``(B, rows·columns, C·4)`` tokens of
    2×2 latent pixels → ``(B, C, 2·rows, 2·columns)``."""
    batch, _, packed = latents.shape
    channels = packed // 4
    latents = latents.view(batch, rows, columns, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return latents.reshape(batch, channels, rows * 2, columns * 2)


def t5_window(pipeline: Any, tokenizer: Any) -> int | None:
    """T5's window as the pipeline pads it: ``max_sequence_length`` less the end token."""
    length = call_default(pipeline, "max_sequence_length")
    if tokenizer is None or not isinstance(length, int):
        return None
    return length - len(tokenizer("")["input_ids"])


def chat_window(pipeline: Any, **template: Any) -> int | None:
    """``max_sequence_length`` less the tokens of the pipeline's chat template around a
    prompt (a Qwen3 text encoder's: FLUX.2 klein, Z-Image)."""
    length = call_default(pipeline, "max_sequence_length")
    tokenizer = getattr(pipeline, "tokenizer", None)
    if tokenizer is None or not isinstance(length, int):
        return None
    text = tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                         add_generation_prompt=True, **template)
    return length - len(tokenizer(text)["input_ids"])


def gray_image(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (128, 128, 128))


class Family:
    """A model family's adapter: what the diffusers backend does differently for the
    pipelines of one family, chosen from the loaded pipeline's class
    (:func:`~diffuserve.engine.backends.diffusers.families.family_of`).

    This base is the generic one (SD 1.x, SDXL, the built-in model, any pipeline not
    listed): real CFG with ``guidance_scale``, a negative prompt where the pipeline
    takes one, 4-D latents divided by the VAE's ``scaling_factor`` (plus its
    ``shift_factor``) for previews, and edits through the pipeline itself where it takes
    ``image``, else through diffusers' image-to-image and inpainting variants."""

    #: The family's name, as logged at load.
    name: str = "diffusers"
    #: What ``guidance_scale`` drives: "cfg" (classifier-free guidance with a negative
    #: prompt), "true-cfg" (the same, as ``true_cfg_scale``), "distilled" (a guidance
    #: embedding: one pass per step), "none" (step-distilled: no guidance at all).
    guidance: str = "cfg"
    #: Whether the loaded pipeline draws from a prompt alone (an edit-only model: no).
    generates: bool = True
    #: The guidance scale above which the family's pipelines guide with the negative
    #: prompt (their classifier-free guidance runs only then); None: not known (the
    #: generic family: used wherever the pipeline takes one).
    negative_prompt_above: float | None = None

    @classmethod
    def of(cls, pipeline: Any) -> Family:
        """This family's adapter for the loaded ``pipeline``."""
        return cls()

    # ------------------------------------------------------------------ what it can do

    def editors(self, pipeline: Any) -> dict[Route, Editor]:
        """The pipelines that edit for ``pipeline``, by route."""
        accepted = accepted_by(pipeline) or frozenset()
        if "image" in accepted:  # the pipeline edits itself
            editors = {Route.IMAGE: Editor(pipeline, Route.IMAGE, fits_inputs=False)}
            if "mask_image" in accepted:
                editors[Route.INPAINT] = Editor(pipeline, Route.INPAINT, fits_inputs=False)
            return editors
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        editors = {}
        for route, auto in ((Route.IMAGE, AutoPipelineForImage2Image),
                            (Route.INPAINT, AutoPipelineForInpainting)):
            try:
                editor = auto.from_pipe(pipeline)
            except Exception:  # this family has no such variant
                logger.debug("no %s variant for %s", route, type(pipeline).__name__)
                continue
            editor.set_progress_bar_config(disable=True)
            editors[route] = Editor(editor, route)
        return editors

    def tasks(self, editors: dict[Route, Editor]) -> frozenset[TaskKind]:
        """What a model with these editors does. A variation is an edit without a mask
        or a prompt: it needs a route that takes no mask."""
        kinds = {TaskKind.GENERATE} if self.generates else set()
        if editors:
            kinds.add(TaskKind.EDIT)
        if Route.IMAGE in editors or Route.INSTRUCT in editors:
            kinds.add(TaskKind.VARIATION)
        return frozenset(kinds)

    # ---------------------------------------------------------------- call arguments

    def call_arguments(self, pipeline: Any, guidance_scale: float,
                       negatives: list[str] | None, count: int,
                       draw_size: tuple[int, int]) -> dict[str, Any]:
        """The family's own arguments of a call of ``count`` images drawn at
        ``draw_size``: guidance, the negative prompts (``negatives``: one per image, or
        None when none was given)
        where the family uses them, anything else it needs. Arguments the called
        pipeline does not take are dropped afterwards
        (:func:`~diffuserve.engine.backends.diffusers.calling.accepted_arguments`)."""
        kwargs: dict[str, Any] = {"guidance_scale": guidance_scale}
        if negatives is not None:
            kwargs["negative_prompt"] = negatives
        return kwargs

    def negative_prompt_unused(self, pipeline: Any, guidance_scale: float) -> str | None:
        """Why ``pipeline`` at ``guidance_scale`` draws without a negative prompt given
        to it, or None when it uses one."""
        accepted = accepted_by(pipeline)
        if accepted is not None and "negative_prompt" not in accepted:
            return f"{type(pipeline).__name__} takes no negative prompt"
        above = self.negative_prompt_above
        if above is not None and guidance_scale <= above:
            return (f"{type(pipeline).__name__} guides with a negative prompt only at "
                    f"guidance_scale above {above:g}")
        return None

    def defaults(self, pipeline: Any) -> ModelDefaults | None:
        """The steps and guidance the loaded ``pipeline``'s model is drawn with where the
        models file sets none, as its model card gives them; None: none known (the
        service's own, 30 steps at guidance 7.5)."""
        return None

    def edit_inputs(self, editor: Editor, params: GenerationParams, count: int,
                    draw_size: tuple[int, int]) -> dict[str, Any]:
        """The images of an edit of ``params`` by ``editor``, for ``count`` images drawn
        at ``draw_size``: one copy per image for inpainting and image to image; the image
        (or the list of it and its references) once for an instruction edit."""
        assert params.image is not None

        def fitted(image: Image.Image) -> Image.Image:
            return fit_to_size(image, *draw_size) if editor.fits_inputs else image

        first = fitted(params.image)
        if editor.route is Route.INSTRUCT:
            return {"image": [first, *params.references] if editor.max_images > 1 else first}
        kwargs: dict[str, Any] = {"image": [first] * count, "strength": params.strength}
        if editor.route is Route.INPAINT and params.mask is not None:
            mask = params.mask
            if editor.fits_inputs:
                mask = fit_to_size(mask.convert("RGB"), *draw_size).convert("L")
            kwargs["mask_image"] = [mask] * count
        return kwargs

    def probe_edit(self, width: int, height: int) -> dict[str, Any]:
        """What a warm-up call of a model that does not generate edits: the
        :class:`~diffuserve.engine.types.GenerationParams` ``image`` (and ``mask``, for a
        model that only inpaints)."""
        return {}

    # ------------------------------------------------------------------------ prompts

    def counting_tokenizer(self, pipeline: Any) -> Any:
        """The tokenizer whose tokens the prompt window is counted in (usage too)."""
        tokenizer = getattr(pipeline, "tokenizer", None)
        # A processor (text and images) counts with the tokenizer inside it.
        return getattr(tokenizer, "tokenizer", tokenizer)

    def prompt_window(self, pipeline: Any) -> int | None:
        """The longest prompt, in :meth:`counting_tokenizer`'s tokens, that the text
        encoder reads whole; None: no limit known (CLIP's 77 tokens are truncated, as
        the SD models were trained)."""
        return None

    # ------------------------------------------------------------------------- sizes

    def native_resolution(self, pipeline: Any, vae_scale: int) -> int | None:
        """The side of the square the model was trained to draw, where the pipeline
        does not say it in the usual places (None: read it from them)."""
        return None

    # ----------------------------------------------------------------------- previews

    def decode_latents(self, pipeline: Any, latents: Any, draw_size: tuple[int, int]) -> Any:
        """``latents`` (a step callback's, one image or several) decoded to an image
        tensor ``(B, 3, H, W)`` in [-1, 1], as the pipeline decodes its final latents.
        ``draw_size``: about the size the call draws at."""
        vae = pipeline.vae
        scale = getattr(vae.config, "scaling_factor", None) or 1.0
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return vae.decode(latents.to(vae.dtype) / scale + shift, return_dict=False)[0]

    def describe(self) -> dict[str, object]:
        return {"family": self.name, "guidance": self.guidance}

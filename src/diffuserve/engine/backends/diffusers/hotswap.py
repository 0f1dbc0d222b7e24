"""One adapter swapped into a compiled denoiser without recompiling it: diffusers' LoRA
hotswap (``enable_lora_hotswap`` and ``load_lora_weights(..., hotswap=True)``).

torch.compile traces the denoiser with the LoRA layers it has then, and a graph holds as
long as those layers keep their shapes and names. So, at load and before compiling, one
of the model's adapters is loaded into a fixed slot (``SLOT``) whose matrices peft pads
to ``max_adapter_rank`` and whose scales it turns into tensors; the compiled graph
includes the slot. From then on an adapter drawn alone is copied into the slot's
matrices in place, and its scale is written into the scale tensors: no new graph. "No
adapter" is the slot at scale 0.

What the slot cannot take (the caller then loads the adapter the ordinary way, and the
denoiser recompiles for the new set at its first call): several adapters at once (the
slot holds one), an adapter of a rank above ``max_adapter_rank``, one that reaches layers
the slot's first adapter does not, or the text encoders (diffusers hotswaps denoisers
only), or whose peft settings differ (``alpha_pattern``, rsLoRA, DoRA).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffuserve.engine.adapters import AdapterLibrary, AdapterSource

logger = logging.getLogger(__name__)

#: The adapter name of the slot inside the weights.
SLOT = "diffuserve_hotswap_slot"


class HotswapSlot:
    """The hotswap slot of one compiled model (see the module's docstring)."""

    def __init__(self, pipeline: Any, max_rank: int, seed: AdapterSource,
                 denoisers: list[Any]) -> None:
        self._pipeline = pipeline
        self.max_rank = max_rank
        #: The adapter the slot was shaped by at load (which layers it reaches).
        self.seed = seed
        #: The denoisers holding the slot (the compiled modules).
        self._denoisers = denoisers
        #: The adapter now in the slot (its name and file version), None when unknown.
        self._held: tuple[str, object] | None = None
        #: The scale tensors of the slot's layers, each with its adapter's own scale.
        self._scales: list[tuple[Any, Any]] = []
        #: Whether the slot is what the weights draw with (else the ordinary adapters).
        self._drawing = False
        #: Adapters (name, version) the slot could not take, and why.
        self._refused: dict[tuple[str, object], str] = {}
        self.swaps = 0

    @classmethod
    def open(cls, pipeline: Any, library: AdapterLibrary,
             max_rank: int) -> tuple[HotswapSlot | None, str]:
        """The slot, shaped by one of the model's adapters (the one reaching the most
        layers, by its file) and drawing nothing (scale 0), or None and why not. Call it
        before the denoiser is compiled."""
        if not hasattr(pipeline, "enable_lora_hotswap"):
            return None, f"{type(pipeline).__name__} has no LoRA hotswap in diffusers"
        candidates = [source for source in map(library.find, library.names())
                      if source is not None]
        if not candidates:
            return None, "the model had no adapter at load to shape the hotswap slot"
        candidates.sort(key=lambda source: -_layer_count(source))
        reasons = []
        for seed in candidates:
            try:
                slot = cls._seeded(pipeline, max_rank, seed)
            except Exception as exc:  # not this one: the next may do
                reasons.append(f"{seed.name}: {repr(exc)[:200]}")
                continue
            return slot, f"shaped by the adapter {seed.name!r}"
        return None, "no adapter shaped the hotswap slot (" + "; ".join(reasons) + ")"

    @classmethod
    def _seeded(cls, pipeline: Any, max_rank: int, seed: AdapterSource) -> HotswapSlot:
        rank = _rank(seed)
        if rank is not None and rank > max_rank:
            raise ValueError(f"its rank {rank} is above max_adapter_rank {max_rank}")
        pipeline.enable_lora_hotswap(target_rank=max_rank, check_compiled="ignore")
        where, weight_name = seed.location()
        try:
            with quiet():
                pipeline.load_lora_weights(where, weight_name=weight_name, adapter_name=SLOT)
        except Exception:
            with contextlib.suppress(Exception), quiet():
                pipeline.delete_adapters([SLOT])
            raise
        finally:  # the hotswap preparation applies to this load only
            for component in _components(pipeline).values():
                if hasattr(component, "_prepare_lora_hotswap_kwargs"):
                    component._prepare_lora_hotswap_kwargs = None
        denoisers, encoders = [], False
        for component in _components(pipeline).values():
            if SLOT not in (getattr(component, "peft_config", None) or {}):
                continue
            if hasattr(component, "enable_lora_hotswap"):
                denoisers.append(component)
            else:  # a text encoder's part: never swapped, so never drawn
                _delete(component, SLOT)
                encoders = True
        if not denoisers:
            raise ValueError("it holds no layers of the denoiser")
        slot = cls(pipeline, max_rank, seed, denoisers)
        if encoders:  # the slot holds only part of it: drawn the ordinary way
            slot._refused[(seed.name, seed.version)] = (
                "it has layers in the text encoders, which diffusers does not hotswap")
        else:
            slot._held = (seed.name, seed.version)
        slot._remember_scales()
        slot.draw_nothing()
        return slot

    def draw_with(self, source: AdapterSource, scale: float) -> str | None:
        """Make the weights draw with the adapter ``source`` alone at ``scale``, through
        the slot; returns None when done, else why the slot cannot take it."""
        key = (source.name, source.version)
        refused = self._refused.get(key)
        if refused is not None:
            return refused
        if self._held != key:
            reason = self._swap_in(source)
            if reason is not None:
                self._refused[key] = reason
                return reason
        self._draw(scale)
        return None

    def draw_nothing(self) -> None:
        """Make the weights draw as without adapters, through the slot at scale 0 (the
        compiled graph stays the one traced with the slot)."""
        self._draw(0.0)

    def leave(self) -> None:
        """The ordinary adapters take over (the caller activates them)."""
        self._drawing = False

    def _swap_in(self, source: AdapterSource) -> str | None:
        rank = _rank(source)
        if rank is not None and rank > self.max_rank:
            return f"its rank {rank} is above the model's max_adapter_rank {self.max_rank}"
        shapes = self._shapes()
        where, weight_name = source.location()
        self._held = None  # whatever happens, the slot holds no known adapter until done
        try:
            with quiet():
                self._pipeline.load_lora_weights(where, weight_name=weight_name,
                                                 adapter_name=SLOT, hotswap=True)
        except Exception as exc:
            return f"diffusers could not hotswap it: {str(exc)[:300]}"
        self.swaps += 1
        if self._shapes() != shapes:  # peft grew the slot for a larger rank
            logger.warning("hotswap slot grew", extra={"fields": {
                "adapter": source.name, "max_adapter_rank": self.max_rank,
                "why": "an adapter of a rank above max_adapter_rank: the denoiser "
                       "recompiles once; raise max_adapter_rank"}})
        self._held = (source.name, source.version)
        self._remember_scales()
        return None

    @property
    def lost(self) -> bool:
        """Whether a failed hotswap took the slot away (diffusers deletes the adapter it
        was swapping into when the swap fails): :meth:`restore` brings it back."""
        return not all(SLOT in (getattr(denoiser, "peft_config", None) or {})
                       for denoiser in self._denoisers)

    def restore(self) -> None:
        """The slot again, shaped by its first adapter, after it was :attr:`lost`. Call
        it with no other adapter in the weights: peft pads every adapter it finds to
        ``max_adapter_rank`` while preparing the slot."""
        logger.warning("hotswap slot loaded again", extra={"fields": {
            "seed": self.seed.name, "why": "a failed hotswap removed it; the denoiser "
                                           "recompiles once"}})
        with contextlib.suppress(Exception), quiet():
            self._pipeline.delete_adapters([SLOT])
        restored = self._seeded(self._pipeline, self.max_rank, self.seed)
        self._denoisers, self._scales = restored._denoisers, restored._scales
        self._held, self._drawing = restored._held, False

    def _remember_scales(self) -> None:
        """Each slot layer's scale tensor and its adapter's own scale (alpha / rank)."""
        self._scales = [(layer.scaling[SLOT], layer.scaling[SLOT].clone())
                        for layer in self._layers()]

    def _draw(self, scale: float) -> None:
        if not self._drawing:
            self._activate()
        for live, own in self._scales:
            live.copy_(own * scale)  # in place: the compiled graph reads this tensor

    def _activate(self) -> None:
        """The slot alone active in the denoisers; every other component's adapters off
        (a text encoder has none of the slot's)."""
        for component in _components(self._pipeline).values():
            drawing = any(component is denoiser for denoiser in self._denoisers)
            for layer in _tuner_layers(component):
                layer.enable_adapters(drawing)
                if drawing:
                    layer.set_adapter([SLOT])
        self._drawing = True

    def _layers(self) -> Iterator[Any]:
        for denoiser in self._denoisers:
            for layer in _tuner_layers(denoiser):
                if SLOT in getattr(layer, "scaling", {}):
                    yield layer

    def _shapes(self) -> list[tuple[int, ...]]:
        return [tuple(layer.lora_A[SLOT].weight.shape) for layer in self._layers()]


def _components(pipeline: Any) -> dict[str, Any]:
    """The pipeline's components that take LoRA (denoisers and text encoders)."""
    names = getattr(pipeline, "_lora_loadable_modules", ())
    return {name: component for name in names
            if (component := getattr(pipeline, name, None)) is not None}


def _tuner_layers(module: Any) -> Iterator[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return (layer for layer in module.modules() if isinstance(layer, BaseTunerLayer))


def _delete(component: Any, name: str) -> None:
    from diffusers.utils.peft_utils import delete_adapter_layers

    delete_adapter_layers(component, name)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """peft's and diffusers' warnings about what the adapter cache does on purpose."""
    with warnings.catch_warnings():
        # Several adapters in one model is what the cache is for; an active adapter
        # deleted is the next one's to replace.
        warnings.filterwarnings("ignore", message=".*multiple adapters", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*was active which is now deleted",
                                category=UserWarning)
        yield


def _header(source: AdapterSource) -> list[tuple[str, list[int]]]:
    """The tensor names and shapes of a local adapter file (its header only), or none
    for an adapter elsewhere (the Hub)."""
    from safetensors import safe_open

    where, weight_name = source.location()
    path = Path(where, weight_name) if weight_name is not None else Path(where)
    if not path.is_file():
        return []
    try:
        with safe_open(str(path), framework="pt") as tensors:
            return [(key, tensors.get_slice(key).get_shape()) for key in tensors.keys()]  # noqa: SIM118
    except Exception:  # not readable here: diffusers' load says why
        return []


def _layer_count(source: AdapterSource) -> int:
    """How many layers of the denoiser the adapter's file reaches (0: not known)."""
    return sum(1 for key, _ in _header(source) if _is_down(key)
               and "text_encoder" not in key and not key.startswith("lora_te"))


def _rank(source: AdapterSource) -> int | None:
    """The adapter's largest rank, read from its file's header (None: not a local file)."""
    ranks = [shape[0] for key, shape in _header(source) if _is_down(key) and shape]
    return max(ranks) if ranks else None


def _is_down(key: str) -> bool:
    """Whether ``key`` is a LoRA down (A) matrix, in peft's, diffusers' or kohya's names."""
    return any(part in key for part in (".lora_A.", ".lora.down.", ".lora_down."))

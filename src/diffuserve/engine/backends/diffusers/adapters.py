"""LoRA adapters on a loaded pipeline: loaded on demand with diffusers' adapter API,
kept in an LRU of ``max_loaded_adapters``, and one set of them active at a time.

Every lane of a model shares its weights, and an adapter lives in those weights (peft
layers inside the denoiser and text encoders), so calls that run at once must all want
the same adapters: :meth:`LoadedAdapters.using` lets calls with the active set in
together and makes a call that wants another set wait until they are done; calls go in
in the order they came, so a call of the active set that comes after one waiting for
another set waits too (no set is starved).

On a compiled model, a set of one adapter (or none) is drawn through a
:class:`~.hotswap.HotswapSlot` where the model has one: swapped in place, without
recompiling; any other set loads as above, and the log says why it recompiles.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from diffuserve.engine.adapters import AdapterLibrary, AdapterSource, Choice
from diffuserve.engine.errors import UnsupportedTask

if TYPE_CHECKING:
    from diffuserve.engine.backends.diffusers.hotswap import HotswapSlot

logger = logging.getLogger(__name__)


def takes_adapters(pipeline: Any) -> bool:
    """Whether the pipeline's class loads LoRA adapters (diffusers' LoRA mixins)."""
    return all(hasattr(pipeline, method) for method in
               ("load_lora_weights", "set_adapters", "delete_adapters"))


class LoadedAdapters:
    """The adapters loaded into one model's shared weights (through ``pipeline``), at
    most ``capacity`` of them, the least recently used unloaded first; on a compiled
    model, ``slot`` draws sets of one adapter or none without recompiling."""

    def __init__(self, pipeline: Any, library: AdapterLibrary, capacity: int,
                 slot: HotswapSlot | None = None) -> None:
        self._pipeline = pipeline
        self.slot = slot
        #: Sets (their names) whose recompiling the log has said why already.
        self._told: set[tuple[str, ...]] = set()
        self._library = library
        self.capacity = capacity
        self.model = library.model
        #: Loaded adapters, least recently used first: public name → (the name inside
        #: the weights, the source it was loaded from).
        self._loaded: OrderedDict[str, tuple[str, AdapterSource]] = OrderedDict()
        self._serial = 0
        #: The active set and the versions of its files.
        self._active: tuple[tuple[Choice, ...], tuple[AdapterSource, ...]] = ((), ())
        #: Whether the loaded adapters are switched off (the weights draw as without).
        self._disabled = False
        self._users = 0
        self._tickets = 0
        self._next = 0
        self._changed = threading.Condition()
        #: Adapter loads and set changes so far, and the seconds they took (for
        #: benchmarks and /v1/models' details).
        self.loads = 0
        self.switches = 0
        self.switch_seconds = 0.0

    def loaded(self) -> list[str]:
        """The loaded adapters' names, least recently used first."""
        return list(self._loaded)

    @contextmanager
    def using(self, choices: tuple[Choice, ...]) -> Iterator[None]:
        """While inside, the weights draw with ``choices`` (canonical: sorted, no scale
        0) and no other set."""
        # Which files, as they are now: a file replaced in the adapters folder is a set
        # of its own, loaded again (a stat per adapter, once per pipeline call).
        wanted = (choices, self._versions(choices))
        with self._changed:
            # First come, first in: a call enters when every call before it has, and
            # with the active set or onto idle weights.
            ticket = self._tickets
            self._tickets += 1
            try:
                self._changed.wait_for(lambda: self._next == ticket and (
                    self._users == 0 or wanted == self._active))
                if wanted != self._active:
                    self._switch(choices)
                    self._active = wanted
                self._users += 1
            finally:
                self._next += 1
                self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._users -= 1
                self._changed.notify_all()

    def _versions(self, choices: tuple[Choice, ...]) -> tuple[AdapterSource, ...]:
        found = []
        for name, _ in choices:
            source = self._library.find(name)
            if source is None:  # gone from its folder since the request was checked
                raise UnsupportedTask(self.model, f"the adapter {name!r}", field="lora")
            found.append(source)
        return tuple(found)

    def _switch(self, choices: tuple[Choice, ...]) -> None:
        """Make ``choices`` the active set (no call is using the weights)."""
        started = time.perf_counter()
        if len(choices) > self.capacity:
            raise UnsupportedTask(self.model, f"more than {self.capacity} adapters at once "
                                  "(its max_loaded_adapters)", field="lora")
        if self.slot is None or not self._through_slot(choices):
            self._load_set(choices)
        self.switches += 1
        self.switch_seconds += time.perf_counter() - started

    def _through_slot(self, choices: tuple[Choice, ...]) -> bool:
        """Draw ``choices`` through the hotswap slot where it can; False (and the log says
        why) where the set loads the ordinary way, recompiling the denoiser."""
        assert self.slot is not None
        if not choices:
            self.slot.draw_nothing()
            return True
        if len(choices) > 1:
            why = (f"a set of {len(choices)} adapters: the hotswap slot holds one "
                   "adapter, so this set loads into the weights and the compiled denoiser "
                   "recompiles for it at its first call")
        else:
            [(name, scale)] = choices
            source = self._library.find(name)
            if source is None:  # gone from its folder since the call began
                raise UnsupportedTask(self.model, f"the adapter {name!r}", field="lora")
            refused = self.slot.draw_with(source, scale)
            if refused is None:
                return True
            if self.slot.lost:
                self._restore_slot()
            why = (f"the adapter {name!r} cannot be hotswapped ({refused}), so it loads "
                   "into the weights and the compiled denoiser recompiles for it at its "
                   "first call")
        names = tuple(name for name, _ in choices)
        log = logger.warning if names not in self._told else logger.info
        self._told.add(names)
        log("adapters swapped with a recompile", extra={"fields": {
            "model": self.model, "adapters": list(names), "why": why}})
        if self.slot is not None:
            self.slot.leave()
        # The slot's drawing switched the other adapters off: on again before a set.
        self._disabled = True
        return False

    def _restore_slot(self) -> None:
        """The hotswap slot back after a failed swap took it away, the ordinary
        adapters unloaded first (loaded again when a set wants them); without a slot
        from then on where it cannot come back."""
        assert self.slot is not None
        with warnings.catch_warnings():  # the set that wants them next makes them active
            warnings.filterwarnings("ignore", message=".*was active which is now deleted",
                                    category=UserWarning)
            for name in list(self._loaded):
                self._unload(name)
        try:
            self.slot.restore()
        except Exception as exc:
            logger.warning("hotswap slot gone", extra={"fields": {
                "model": self.model, "error": repr(exc)[:300], "why": "every new set of "
                "adapters recompiles the compiled denoiser from now on"}})
            self.slot = None

    def _load_set(self, choices: tuple[Choice, ...]) -> None:
        """Make ``choices`` the active set by loading its adapters into the weights."""
        keep = {name for name, _ in choices}
        internal = [self._load(name, keep) for name, _ in choices]
        if choices:
            if self._disabled:
                self._pipeline.enable_lora()
                self._disabled = False
            self._pipeline.set_adapters(internal, adapter_weights=[s for _, s in choices])
        elif self._loaded and not self._disabled:
            self._pipeline.disable_lora()
            self._disabled = True

    def _load(self, name: str, keep: set[str]) -> str:
        """Adapter ``name`` loaded (again, when its file changed), most recently used,
        unloading the least recently used adapters not in ``keep`` to make room."""
        source = self._library.find(name)
        if source is None:  # gone from its folder since the call began
            raise UnsupportedTask(self.model, f"the adapter {name!r}", field="lora")
        held = self._loaded.get(name)
        if held is not None and held[1].version == source.version:
            self._loaded.move_to_end(name)
            return held[0]
        if held is not None:
            self._unload(name)
        while len(self._loaded) >= self.capacity:
            self._unload(next(loaded for loaded in self._loaded if loaded not in keep))
        self._serial += 1
        internal = f"adapter{self._serial}"  # peft names must not hold dots
        where, weight_name = source.location()
        try:
            with warnings.catch_warnings():
                # Several adapters in one model is what the cache is for.
                warnings.filterwarnings("ignore", message=".*multiple adapters",
                                        category=UserWarning)
                self._pipeline.load_lora_weights(where, weight_name=weight_name,
                                                 adapter_name=internal)
        except Exception as exc:
            with contextlib.suppress(Exception):  # whatever part of it did load
                self._pipeline.delete_adapters([internal])
            logger.warning("adapter could not be loaded", extra={"fields": {
                "model": self.model, "adapter": name, "error": repr(exc)[:300]}})
            # The same request would fail the same way: a refusal, not a server error.
            raise UnsupportedTask(self.model, f"the adapter {name!r}, which could not be "
                                  "loaded (the server's log says why)", field="lora") from exc
        self._loaded[name] = (internal, source)
        self.loads += 1
        logger.info("adapter loaded", extra={"fields": {
            "model": self.model, "adapter": name, "loaded": len(self._loaded)}})
        return internal

    def _unload(self, name: str) -> None:
        internal, _ = self._loaded.pop(name)
        self._pipeline.delete_adapters([internal])
        logger.info("adapter unloaded", extra={"fields": {"model": self.model,
                                                          "adapter": name}})

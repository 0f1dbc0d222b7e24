"""Lanes: what one pipeline call at a time uses, and the CPU threads that call runs on.

A diffusers pipeline keeps a call's state on itself (its scheduler, guidance scale…), so
calls that run at once (``workers``) each take a lane of their own; the lanes share the
weights. A call alone runs on every CPU thread, one beside others on its share, so that
calls side by side do not oversubscribe the cores (a call alone keeps its latency).
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from diffuserve.config import ModelSpec
from diffuserve.engine.backends.diffusers.edits import edit_pipelines
from diffuserve.engine.backends.diffusers.families import Editor, Route

logger = logging.getLogger(__name__)


def use_threads(count: int) -> None:
    """PyTorch's CPU threads for this thread's work from now on. A thread's first use
    of PyTorch sets its count to the one set last on any thread, so that use comes
    first here, and the count set next is the one kept."""
    import torch

    torch.get_num_threads()
    torch.set_num_threads(count)


@dataclass
class Lane:
    """A pipeline and the pipelines that edit for it (itself, or variants over its
    weights), used by one call at a time."""

    pipeline: Any
    editors: dict[Route, Editor] = field(default_factory=dict)


class Lanes:
    """The lanes not in use (a call takes one and gives it back), and how many CPU
    threads a call on one gets: ``threads`` alone, ``shared_threads`` beside others."""

    def __init__(self, lanes: Sequence[Lane] = (), *, threads: int = 1,
                 shared_threads: int = 1) -> None:
        self.count = len(lanes)
        self.threads = threads
        self.shared_threads = shared_threads
        self._free: queue.SimpleQueue[Lane] = queue.SimpleQueue()
        for lane in lanes:
            self._free.put(lane)
        #: Calls under way.
        self._busy = 0
        self._busy_lock = threading.Lock()

    def get(self) -> Lane:
        """A lane not in use; waits for one."""
        return self._free.get()

    def put(self, lane: Lane) -> None:
        """``lane`` is free again."""
        self._free.put(lane)

    @contextmanager
    def lane(self) -> Iterator[Lane]:
        """A lane for one call, on this thread with the CPU threads the call gets."""
        lane = self.get()
        self._enter()
        try:
            yield lane
        finally:
            self._leave()
            self.put(lane)

    def _enter(self) -> None:
        """A call begins on this thread: with every thread when no other call of this
        model runs, else with its share."""
        with self._busy_lock:
            self._busy += 1
            alone = self._busy == 1
        use_threads(self.threads if alone else self.shared_threads)

    def _leave(self) -> None:
        with self._busy_lock:
            self._busy -= 1
        # The count set last is also what new threads start with: all of them.
        use_threads(self.threads)

    def warm_shared(self, warm: Callable[[], None]) -> None:
        """Run ``warm`` on this thread with a call's share of the CPU threads."""
        use_threads(self.shared_threads)
        try:
            warm()
        finally:
            use_threads(self.threads)


def twin_lane(pipeline: Any) -> Lane:
    """A lane of its own over ``pipeline``'s weights."""
    twin = copy.copy(pipeline)
    # A fast tokenizer is not safe to use from two threads at once (its padding
    # settings change per call): each lane encodes with a copy of its own.
    for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        if getattr(pipeline, name, None) is not None:
            setattr(twin, name, copy.deepcopy(getattr(pipeline, name)))
    return Lane(twin, edit_pipelines(twin))


def open_lanes(spec: ModelSpec, device: str, first: Lane,
               warm: Callable[[Any], None]) -> Lanes:
    """One lane per worker (``workers``; on a CPU only), ``first`` among them, each
    warmed (``warm(pipeline)``) on its share of the cores, so that neither PyTorch nor
    ONNX Runtime sets up for a thread count in front of a request."""
    import torch

    threads = torch.get_num_threads()
    workers = spec.workers
    if workers > 1 and device != "cpu":
        logger.warning("workers apply on a CPU: this model runs one call at a time",
                       extra={"fields": {"model": spec.name, "device": device,
                                         "workers": workers}})
        workers = 1
    lanes = [first] + [twin_lane(first.pipeline) for _ in range(workers - 1)]
    opened = Lanes(lanes, threads=threads, shared_threads=max(1, threads // workers))
    if workers > 1:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=1) as warmer:
            warmer.submit(opened.warm_shared, lambda: warm(lanes[1].pipeline)).result()
        logger.info("workers ready", extra={"fields": {
            "model": spec.name, "workers": workers, "threads_alone": threads,
            "threads_side_by_side": opened.shared_threads,
            "seconds": round(time.perf_counter() - started, 1)}})
    return opened

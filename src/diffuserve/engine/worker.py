"""Device workers: pipeline calls leave the event loop and run one at a time per device.

This is the seam for the production scheduler (bounded queues, batching, deadlines):
the service awaits :meth:`DeviceWorkers.run` and knows nothing of threads.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class DeviceWorkers:
    """One worker thread per device; calls for a device run in arrival order.

    A call cancelled while it still waits (its client went away) never runs.
    """

    def __init__(self) -> None:
        self._executors: dict[str, ThreadPoolExecutor] = {}

    def _executor(self, device: str) -> ThreadPoolExecutor:
        executor = self._executors.get(device)
        if executor is None:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"diffuserve-{device}")
            self._executors[device] = executor
        return executor

    async def run(
        self, device: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor(device), functools.partial(fn, *args, **kwargs)
        )

    def shutdown(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self._executors.clear()

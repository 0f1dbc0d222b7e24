"""The worker threads of one device, and how many pipeline calls it runs at once."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

#: Threads a device may ever have; how many calls actually run at once is the slot's
#: capacity (its semaphore), and threads are started only as calls need them.
MAX_DEVICE_THREADS = 64


class DeviceSlot:
    """Pipeline calls on one device take turns: one at a time, so that models sharing a
    GPU never overlap, or up to the ``workers`` of the models on it (on a CPU)."""

    def __init__(self, device: str, capacity: int = 1) -> None:
        self.device = device
        self.executor = ThreadPoolExecutor(max_workers=MAX_DEVICE_THREADS,
                                           thread_name_prefix=f"diffuserve-{device}")
        self.capacity = capacity
        self.calls = asyncio.Semaphore(capacity)

    def widen(self, capacity: int) -> None:
        """Let up to ``capacity`` calls run at once (a model with more workers came)."""
        for _ in range(capacity - self.capacity):
            self.calls.release()
        self.capacity = max(self.capacity, capacity)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

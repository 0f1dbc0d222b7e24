"""One worker thread and one lock per device."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


class DeviceSlot:
    """Pipeline calls on one device never overlap: models sharing a GPU take turns."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"diffuserve-{device}")
        self.lock = asyncio.Lock()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

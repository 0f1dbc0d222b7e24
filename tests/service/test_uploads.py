"""Uploads decoded off the event loop: a few threads of their own, a budget of pixels
held by decoding in the whole process, and the memory handed back once freed."""

from __future__ import annotations

import asyncio
import concurrent.futures.thread
import gc
import threading
import time
import weakref
from pathlib import Path

import pytest
from PIL import Image

from diffuserve.engine import image_memory
from diffuserve.engine.types import TaskKind
from diffuserve.protocol import edits
from diffuserve.protocol.uploads import DecodedImage, ProbedImage
from diffuserve.service.uploads import PixelBudget, UploadDecoder
from tests.support.clients import AUTH, make_client
from tests.support.fakes import FakeBackend
from tests.support.uploads import mask_png, png


def test_a_budget_never_holds_more_than_its_pixels_and_serves_in_order() -> None:
    async def scenario() -> tuple[list[int], list[str]]:
        budget = PixelBudget(100)
        held: list[int] = []
        order: list[str] = []

        async def use(name: str, pixels: int) -> None:
            taken = await budget.acquire(pixels)
            order.append(name)
            held.append(budget.held)
            await asyncio.sleep(0.01)
            budget.release(taken)

        await asyncio.gather(use("a", 60), use("b", 60), use("c", 30), use("d", 100))
        return held, order

    held, order = asyncio.run(scenario())
    assert max(held) <= 100
    assert order == ["a", "b", "c", "d"]  # c fits beside b, but waits its turn


def test_a_cancelled_waiter_takes_nothing_and_lets_the_next_one_in() -> None:
    async def scenario() -> int:
        budget = PixelBudget(100)
        first = await budget.acquire(80)
        waiting = asyncio.ensure_future(budget.acquire(50))
        behind = asyncio.ensure_future(budget.acquire(10))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await asyncio.wait_for(behind, 5)  # 80 + 10 fits once the 50 left the queue
        budget.release(first)
        budget.release(10)
        return budget.held

    assert asyncio.run(scenario()) == 0


def test_decodes_run_on_their_own_threads_a_bounded_number_at_once() -> None:
    running: list[int] = []
    threads: set[str] = set()
    lock = threading.Lock()
    now = {"count": 0}

    def work() -> None:
        with lock:
            now["count"] += 1
            running.append(now["count"])
            threads.add(threading.current_thread().name)
        time.sleep(0.02)
        with lock:
            now["count"] -= 1

    async def scenario() -> str:
        decoder = UploadDecoder(threads=2)
        await asyncio.gather(*(decoder.decode(1, work) for _ in range(8)))
        return threading.current_thread().name

    loop_thread = asyncio.run(scenario())
    assert max(running) <= 2
    assert loop_thread not in threads and all(name.startswith("decode") for name in threads)


def test_the_budget_comes_back_when_a_decode_ends_even_if_its_caller_left() -> None:
    release = threading.Event()

    async def scenario() -> int:
        decoder = UploadDecoder(threads=1, max_pixels=100)
        caller = asyncio.ensure_future(decoder.decode(100, lambda: release.wait(10)))
        await asyncio.sleep(0.05)
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        held_while_running = decoder.budget.held  # the thread still holds the pixels
        release.set()
        await decoder.decode(100, lambda: None)  # fits once the first is done
        return held_while_running

    assert asyncio.run(scenario()) == 100


def test_memory_is_handed_back_once_a_large_uploads_images_are_freed(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[int] = []
    monkeypatch.setattr(image_memory, "_MALLOC_TRIM", trims.append)

    async def scenario() -> None:
        decoder = UploadDecoder()
        image = await decoder.decode(5_000_000, lambda: Image.new("RGB", (8, 8)),
                                     lambda result: (result,))
        assert trims == [0]  # once after the decode's own copies were freed
        del image
        gc.collect()

    asyncio.run(scenario())
    deadline = time.monotonic() + 10
    while len(trims) < 2:
        assert time.monotonic() < deadline, "no trim after the image was freed"
        time.sleep(0.01)


class EditingBackend(FakeBackend):
    tasks = frozenset(TaskKind)


def test_an_edit_is_decoded_on_a_decoding_thread(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    decode = edits.decode_probed

    def spy(probed: object) -> object:
        threads.append(threading.current_thread().name)
        return decode(probed)  # type: ignore[arg-type]

    monkeypatch.setattr(edits, "decode_probed", spy)
    with make_client(tmp_path, EditingBackend(), auto_aliases=True, aliases=()) as client:
        response = client.post("/v1/images/edits", headers=AUTH, data={
            "prompt": "x", "model": "gpt-image-1"}, files={
            "image": ("a.png", png().data, "image/png"),
            "mask": ("m.png", mask_png().data, "image/png")})
    assert response.status_code == 200, response.text
    assert len(threads) == 2 and all(name.startswith("decode") for name in threads)


@pytest.mark.parametrize("mask_size", [None, (32, 32)])
def test_a_refused_edits_images_are_freed_without_waiting_for_the_garbage_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mask_size: tuple[int, int] | None
) -> None:
    # No reference cycle may keep decoded pixels alive until a collection runs: with
    # the collector off, they must go when the answer is sent. Refused by the engine
    # after decoding (this one draws no transparent background), or while decoding (a
    # mask's size).
    alive: list[weakref.ref[Image.Image]] = []
    decode = edits.decode_probed

    def tracked(probed: ProbedImage) -> DecodedImage:
        decoded = decode(probed)
        alive.append(weakref.ref(decoded.image))
        return decoded

    monkeypatch.setattr(edits, "decode_probed", tracked)
    # A decoding thread may keep its work item (its future, and what that holds) a
    # while after the loop has the answer: make that while long.
    run = concurrent.futures.thread._WorkItem.run

    def lingering(item: object) -> None:
        run(item)
        time.sleep(0.5)

    monkeypatch.setattr(concurrent.futures.thread._WorkItem, "run", lingering)
    files = {"image": ("a.png", png().data, "image/png")}
    if mask_size is not None:
        files["mask"] = ("m.png", mask_png(mask_size).data, "image/png")
    with make_client(tmp_path, EditingBackend(), auto_aliases=True, aliases=()) as client:
        gc.collect()
        gc.disable()
        try:
            response = client.post("/v1/images/edits", headers=AUTH, files=files, data={
                "prompt": "x", "model": "gpt-image-1", "background": "transparent"})
            assert response.status_code == 400, response.text
            assert alive and all(ref() is None for ref in alive)
        finally:
            gc.enable()

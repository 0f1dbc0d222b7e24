"""The playground's adapters (LoRA) in a real browser, against a live server of the tiny
SD pipeline as ``sd`` (an adapters folder with ``pixel`` and ``ink``, a declared ``clay``
at 0.5), ``pixel-sd`` derived from it (``pixel`` at 0.8), and the built-in model, which
has no adapters. What the page sends is what the test reads."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Page, Request, expect

from diffuserve.builtin import WEIGHTS_DIR
from tests.support.browser import DRAW_TIMEOUT_MS, RECORD_FORMS, open_page, wait_until
from tests.support.live_server import LiveServer, start_server
from tests.support.tiny_loras import write_adapter_models

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory,
            tiny_models: dict[str, Path]) -> dict[str, Path]:
    return write_adapter_models(tmp_path_factory.mktemp("adapters-web"), tiny_models["sd"])


@pytest.fixture(scope="module")
def server(folders: dict[str, Path]) -> Iterator[LiveServer]:
    live = start_server(["--models-file", str(folders["root"] / "models.toml"),
                         "--model", f"diffuserve-emoji={WEIGHTS_DIR}"], folders["root"],
                        timeout=180)
    yield live
    live.stop()


def generations(page: Page) -> list[dict[str, Any]]:
    """The JSON bodies of the generations the page sends, as they are sent."""
    sent: list[dict[str, Any]] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/v1/images/generations"):
            sent.append(request.post_data_json)

    page.on("request", record)
    return sent


def choose(page: Page, model: str) -> None:
    page.select_option("#model", model)
    if not page.locator("#more").evaluate("details => details.open"):
        page.click("#more summary")


def adapter_names(page: Page) -> list[str]:
    return page.eval_on_selector_all("#adapter-list .adapter",
                                     "rows => rows.map((row) => row.dataset.name)")


def row(page: Page, name: str) -> Any:
    return page.locator(f"#adapter-list .adapter[data-name='{name}']")


def test_choose_an_adapter_at_a_scale_and_it_is_sent_with_the_generation(
        page: Page, server: LiveServer, screenshots: Path) -> None:
    sent = generations(page)
    open_page(page, server)
    choose(page, "sd")
    section = page.locator("#adapters")
    expect(section).to_be_visible()
    expect(section.locator("legend")).to_have_text("Adapters (LoRA)")
    # Declared first, then the folder's; each at its default scale, none chosen yet.
    assert adapter_names(page) == ["clay", "ink", "pixel"]
    expect(page.get_by_label("Scale of clay", exact=True)).to_have_value("0.5")
    expect(page.get_by_label("Scale of pixel", exact=True)).to_have_value("1")
    expect(page.get_by_label("Scale of pixel", exact=True)).to_be_disabled()
    expect(page.locator("#adapters-applied")).to_be_hidden()

    page.fill("#prompt", "a cat")
    page.select_option("#size", "256x256")
    page.fill("#steps", "2")
    page.get_by_label("pixel", exact=True).check()
    page.get_by_label("Scale of pixel", exact=True).fill("0.7")
    # The slider follows the number.
    expect(page.get_by_label("Scale of pixel (slider)")).to_have_value("0.7")
    page.locator("#adapters").screenshot(path=screenshots / "11-adapters.png")
    page.click("#go")
    cards = page.locator("#gallery .card")
    expect(cards).to_have_count(1, timeout=DRAW_TIMEOUT_MS)
    assert sent[-1]["model"] == "sd"
    assert sent[-1]["lora"] == [{"name": "pixel", "scale": 0.7}]
    expect(cards.first.locator(".facts")).to_contain_text("pixel × 0.7")
    page.screenshot(path=screenshots / "12-adapters-generated.png", full_page=True)

    # Unchecked, it is not sent.
    page.get_by_label("pixel", exact=True).uncheck()
    page.click("#go")
    expect(cards).to_have_count(2, timeout=DRAW_TIMEOUT_MS)
    assert "lora" not in sent[-1]


def test_a_model_without_adapters_hides_the_control_and_sends_none(
        page: Page, server: LiveServer) -> None:
    sent = generations(page)
    open_page(page, server)
    choose(page, "sd")
    page.get_by_label("ink", exact=True).check()  # chosen for sd …
    choose(page, "diffuserve-emoji")  # … but this model has no adapters
    expect(page.locator("#adapters")).to_be_hidden()
    page.fill("#prompt", "a cat")
    page.select_option("#size", "256x256")
    page.fill("#steps", "8")
    page.click("#go")
    expect(page.locator("#gallery .card")).to_have_count(1, timeout=DRAW_TIMEOUT_MS)
    assert sent[-1]["model"] == "diffuserve-emoji" and "lora" not in sent[-1]
    # Back on sd, the choice is still there.
    choose(page, "sd")
    expect(page.get_by_label("ink", exact=True)).to_be_checked()


def test_a_derived_model_shows_the_adapters_it_applies_of_its_own(
        page: Page, server: LiveServer, screenshots: Path) -> None:
    open_page(page, server)
    choose(page, "pixel-sd")
    applied = page.locator("#adapters-applied")
    expect(applied).to_have_text("pixel-sd applies of its own: pixel × 0.8.")
    # Its own adapter is not offered again; the others may be added.
    assert adapter_names(page) == ["clay", "ink"]
    described_by = page.locator("#adapters").get_attribute("aria-describedby") or ""
    assert "adapters-applied" in described_by.split()
    page.locator("#adapters").screenshot(path=screenshots / "13-adapters-derived.png")


def test_a_file_dropped_into_the_folder_is_offered_when_more_opens_again(
        page: Page, server: LiveServer, folders: dict[str, Path]) -> None:
    open_page(page, server)
    choose(page, "sd")
    expect(page.locator("#adapter-list .adapter")).to_have_count(3)
    shutil.copy(folders["spare"] / "late.safetensors", folders["loras"] / "late.safetensors")
    try:
        page.click("#more summary")  # closed …
        page.click("#more summary")  # … and opened again
        expect(row(page, "late")).to_be_visible()
        assert adapter_names(page) == ["clay", "ink", "late", "pixel"]
    finally:
        (folders["loras"] / "late.safetensors").unlink()


def test_an_edit_sends_its_adapters_as_the_forms_lora_part(
        page: Page, server: LiveServer, tmp_path: Path) -> None:
    page.add_init_script(RECORD_FORMS)
    open_page(page, server)
    page.click("label[for=mode-edit]")
    choose(page, "sd")
    picture = tmp_path / "start.png"
    Image.new("RGB", (256, 256), (120, 160, 200)).save(picture)
    page.set_input_files("#edit-file", str(picture))
    page.fill("#prompt", "a hat")
    page.fill("#steps", "2")
    page.get_by_label("clay", exact=True).check()
    page.get_by_label("ink", exact=True).check()
    page.get_by_label("Scale of ink", exact=True).fill("-0.5")
    page.click("#go")
    wait_until(page, "window.sentForms.length > 0")
    sent: dict[str, str] = page.evaluate("window.sentForms[0]")
    assert json.loads(sent["lora"]) == [{"name": "clay", "scale": 0.5},
                                        {"name": "ink", "scale": -0.5}]
    expect(page.locator("#gallery .card")).to_have_count(1, timeout=DRAW_TIMEOUT_MS)
    expect(page.locator("#form-error")).to_be_hidden()


def test_no_more_than_eight_adapters_can_be_chosen(
        page: Page, server: LiveServer, folders: dict[str, Path]) -> None:
    extra = [folders["loras"] / f"extra{index}.safetensors" for index in range(6)]
    for path in extra:  # never drawn: a name is all the page needs
        path.write_bytes(b"x")
    try:
        open_page(page, server)
        choose(page, "sd")
        boxes = page.locator("#adapter-list input[type=checkbox]")
        expect(boxes).to_have_count(9)
        for index in range(8):
            boxes.nth(index).check()
        expect(boxes.nth(8)).to_be_disabled()
        expect(page.locator("#adapters-hint")).to_contain_text("At most 8 adapters")
        boxes.nth(0).uncheck()
        expect(boxes.nth(8)).to_be_enabled()
    finally:
        for path in extra:
            path.unlink()

"""The playground in a real browser (headless Chromium) against live servers on the
built-in model: pickers that follow the rule tables, an image that forms from partial
images, a painted mask sent as OpenAI's mask, a wrong key and a 429 as the user sees
them, and a phone's width. Each state is saved as a screenshot."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from diffuserve.protocol.rules import GENERIC, MAX_SEED, RULES_BY_NAME
from tests.support.browser import DRAW_TIMEOUT_MS, KEY, RECORD_FORMS, open_page, wait_until
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.e2e

#: The built-in model's fewest steps (its min_steps): the tests watch the page, not the
#: model, but their screenshots are the docs' pictures, and fewer steps draw noise.
STEPS = "8"

def set_up(page: Page, *, model: str, prompt: str, size: str | None = None,
           custom_size: str | None = None, partials: str | None = None) -> None:
    page.select_option("#model", model)
    page.fill("#prompt", prompt)
    if size is not None:
        page.select_option("#size", size)
    if custom_size is not None:
        page.fill("#size-custom", custom_size)
    page.click(".advanced summary")
    page.fill("#steps", STEPS)
    if partials is not None:
        page.fill("#partial-images", partials)


def data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    assert header.endswith(";base64"), header
    return base64.b64decode(payload)


def test_the_pickers_offer_exactly_what_the_rule_tables_accept(
        page: Page, open_server: LiveServer) -> None:
    open_page(page, open_server)
    served = page.eval_on_selector_all("#model option", "options => options.map(o => o.value)")
    assert served[0] == "diffuserve-emoji"  # the served model comes first and is chosen
    assert page.input_value("#model") == "diffuserve-emoji"
    assert page.input_value("#size") == GENERIC.default_size
    assert set(RULES_BY_NAME) <= set(served)
    for name in ["diffuserve-emoji", *RULES_BY_NAME]:
        page.select_option("#model", name)
        rules = RULES_BY_NAME.get(name, GENERIC)
        shown: dict[str, Any] = page.evaluate("window.diffuserve.choices()")
        assert shown["sizes"] == list(rules.sizes), name
        assert shown["qualities"] == list(rules.qualities), name
        assert shown["styles"] == list(rules.styles), name
        assert shown["max_n"] == (1 if rules.single_image else rules.max_n), name
        assert shown["free_size"] == rules.free_size, name
        assert bool(shown["output_formats"]) == rules.image_options, name
        # A choice the new name also allows is kept; else the name's default is chosen.
        assert page.input_value("#size") in rules.sizes, name
        assert page.input_value("#quality") in rules.qualities, name
    page.select_option("#model", "gpt-image-2")
    page.fill("#n", "3")
    assert page.evaluate("window.diffuserve.choices().seed_max") == MAX_SEED - 2
    page.select_option("#background", "transparent")
    assert page.eval_on_selector("#output-format option[value=jpeg]", "o => o.disabled")


def test_each_name_shows_the_model_it_points_at_and_the_built_in_model_says_what_it_draws(
        page: Page, open_server: LiveServer, screenshots: Path) -> None:
    open_page(page, open_server)
    labels: dict[str, str] = page.eval_on_selector_all(
        "#model option", "options => Object.fromEntries(options.map(o => [o.value, o.text]))")
    assert labels["diffuserve-emoji"] == "diffuserve-emoji"
    for name in RULES_BY_NAME:  # every OpenAI name, with the model it is drawn by
        assert labels[name] == f"{name} → diffuserve-emoji", name
    about = page.locator("#model-about")
    expect(about).to_be_visible()
    expect(about).to_have_text(
        "diffuserve-emoji is the built-in model: it draws emoji-style pictures; serve a "
        "real model for photographs, e.g. diffuserve serve --model "
        "sdxl=stabilityai/stable-diffusion-xl-base-1.0 (see the README's “Serving real "
        "models”).")
    page.select_option("#model", "dall-e-3")
    expect(about).to_contain_text("Drawn by diffuserve-emoji, the built-in model: it draws "
                                  "emoji-style pictures")
    # The command to copy, as code; no link to a copy of the README that may not exist.
    assert about.locator("code").inner_text().startswith("diffuserve serve --model ")
    assert about.locator("a").count() == 0
    # Under the picker, across the form's width, above the next row of fields.
    picker, line = page.locator("#model").bounding_box(), about.bounding_box()
    quality = page.locator("#quality").bounding_box()
    assert picker is not None and line is not None and quality is not None
    assert picker["y"] + picker["height"] <= line["y"] < quality["y"]
    assert line["width"] > 1.5 * picker["width"]
    page.locator(".compose").screenshot(path=screenshots / "10-model-about.png")


def test_generate_watch_the_image_form_and_download_it(
        page: Page, open_server: LiveServer, screenshots: Path) -> None:
    # The address the server printed is the page's.
    assert f"open {open_server.base_url}/ in a browser" in open_server.log()
    open_page(page, open_server)
    page.screenshot(path=screenshots / "01-ready.png")
    set_up(page, model="gpt-image-2", prompt="a red apple", custom_size="384x256", partials="3")
    page.fill("#n", "2")
    # Record, in order, each partial and each completed image the preview shows (one
    # record per change, even when the observer is called once for several).
    page.evaluate("""() => {
        window.seen = [];
        new MutationObserver((records) => records.forEach(
            (record) => window.seen.push(record.attributeName))
        ).observe(document.getElementById('live'), {
            attributes: true, attributeFilter: ['data-partials', 'data-completed']});
    }""")
    page.click("#go")
    wait_until(page, "window.seen.includes('data-partials')")
    page.screenshot(path=screenshots / "02-forming.png", full_page=True)
    cards = page.locator("#gallery .card")
    expect(cards).to_have_count(2, timeout=DRAW_TIMEOUT_MS)
    card = cards.first
    seen: list[str] = page.evaluate("window.seen")
    assert seen.count("data-completed") == 2, seen
    # At least one partial image was shown before the first final image.
    assert seen.index("data-partials") < seen.index("data-completed"), seen
    for image in cards.locator("img").all():
        assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [384, 256]
    seeds = [int(text.rsplit("seed ", 1)[1]) for text in cards.locator(".facts").all_inner_texts()]
    assert seeds[0] == seeds[1] + 1  # image i has seed + i; the newest card comes first
    expect(page.locator("#status")).to_contain_text("2 images in")
    page.screenshot(path=screenshots / "03-generated.png", full_page=True)

    with page.expect_download() as download_info:
        card.locator(".download").click()
    download = download_info.value
    assert download.suggested_filename.startswith("diffuserve-")
    assert download.suggested_filename.endswith(".png")
    with Image.open(download.path()) as image:
        assert image.size == (384, 256)

    # The history survives a reload.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#history .history-item")).to_have_count(2)


def download(page: Page, card: Locator) -> Image.Image:
    with page.expect_download() as download_info:
        card.locator(".download").click()
    with Image.open(download_info.value.path()) as image:
        return image.convert("RGB")


def test_edit_a_result_with_a_painted_mask_then_make_variations(
        page: Page, open_server: LiveServer, screenshots: Path, tmp_path: Path) -> None:
    page.add_init_script(RECORD_FORMS)
    open_page(page, open_server)
    set_up(page, model="diffuserve-emoji", prompt="a red apple", size="256x256")
    page.click("#go")
    first = page.locator("#gallery .card").first
    expect(first).to_be_visible(timeout=DRAW_TIMEOUT_MS)
    original = download(page, first)

    # Take the result from the gallery into the editor and paint across its top half.
    first.locator(".edit").click()
    expect(page.locator("#go")).to_have_text("Edit")
    canvas = page.locator("#edit-mask")
    expect(canvas).to_be_visible()
    page.fill("#prompt", "a green apple")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    for row in (0.2, 0.35):
        y = box["y"] + box["height"] * row
        page.mouse.move(box["x"] + box["width"] * 0.1, y)
        page.mouse.down()
        for fraction in (0.3, 0.5, 0.7, 0.9):
            page.mouse.move(box["x"] + box["width"] * fraction, y)
        page.mouse.up()
    expect(page.locator("#mask-hint")).to_contain_text("painted area will be redrawn")
    page.screenshot(path=screenshots / "04-mask-painted.png", full_page=True)

    page.click("#go")
    wait_until(page, "window.sentForms.length > 0")
    sent: dict[str, str] = page.evaluate("window.sentForms[0]")
    assert sent["model"] == "diffuserve-emoji" and sent["stream"] == "true"
    assert sent["prompt"] == "a green apple"
    with Image.open(io.BytesIO(data_url_bytes(sent["image"]))) as image:
        assert image.size == (256, 256)
    with Image.open(io.BytesIO(data_url_bytes(sent["mask"]))) as mask:
        assert mask.format == "PNG" and mask.size == (256, 256)
        alpha = mask.convert("RGBA").getchannel("A")
        assert alpha.getpixel((128, 52)) == 0  # painted: to be redrawn
        assert alpha.getpixel((128, 220)) == 255  # kept
        assert alpha.getpixel((2, 52)) == 255

    cards = page.locator("#gallery .card")
    expect(cards).to_have_count(2, timeout=DRAW_TIMEOUT_MS)
    edited_card = cards.first
    assert edited_card.locator("img").evaluate("img => img.naturalWidth") == 256
    page.screenshot(path=screenshots / "05-edited.png", full_page=True)
    # What the mask kept is the input's own pixels; the painted band was redrawn.
    edited = download(page, edited_card)
    for point in ((128, 220), (20, 240), (240, 150)):
        assert edited.getpixel(point) == original.getpixel(point), point
    band = [(x, 52) for x in range(60, 200, 10)]
    assert any(edited.getpixel(point) != original.getpixel(point) for point in band)

    # Variations of the edit, in one click.
    edited_card.locator(".vary").click()
    expect(cards).to_have_count(3, timeout=DRAW_TIMEOUT_MS)
    expect(cards.first).to_contain_text("seed ")

    # An image of one's own, picked from the disk, is shown at its own size.
    own = tmp_path / "own.png"
    Image.new("RGB", (200, 120), (30, 90, 200)).save(own)
    page.set_input_files("#edit-file", str(own))
    expect(page.locator("#drop-label")).to_contain_text("200×120")
    assert canvas.evaluate("c => [c.width, c.height]") == [200, 120]


def test_a_refused_field_is_named_next_to_it(page: Page, open_server: LiveServer,
                                             screenshots: Path) -> None:
    open_page(page, open_server)
    set_up(page, model="gpt-image-2", prompt="a cat", custom_size="100x100")
    page.click("#go")
    error = page.locator("#size-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The size is not supported by this model.")
    expect(page.locator("#size")).to_have_attribute("aria-invalid", "true")
    page.locator(".compose").screenshot(path=screenshots / "06-field-error.png")


def test_a_wrong_key_is_refused_with_the_message_and_a_right_one_is_kept(
        page: Page, keyed_server: LiveServer, screenshots: Path) -> None:
    page.goto(keyed_server.base_url + "/")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()  # asked for at once: the server has keys
    page.fill("#key-input", "sk-wrong-key-987654321")
    page.click("#key-save")
    expect(page.locator("#key-error")).to_contain_text("Incorrect API key provided")
    page.screenshot(path=screenshots / "07-wrong-key.png")

    with page.expect_request("**/v1/models") as request_info:
        page.fill("#key-input", KEY)
        page.click("#key-save")
    assert request_info.value.headers["authorization"] == f"Bearer {KEY}"
    expect(dialog).to_be_hidden()
    page.wait_for_selector("body[data-ready=true]")
    assert KEY not in page.url
    assert page.evaluate("localStorage.getItem('diffuserve.apiKey')") == KEY
    assert KEY not in keyed_server.log()
    # Kept: a new page of this browser is not asked again.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(dialog).to_be_hidden()


def test_a_rate_limit_shows_the_message_and_the_wait(
        page: Page, keyed_server: LiveServer, screenshots: Path) -> None:
    page.add_init_script(f"localStorage.setItem('diffuserve.apiKey', '{KEY}')")
    open_page(page, keyed_server)
    set_up(page, model="dall-e-2", prompt="a small boat", size="256x256")
    statuses = []
    page.on("response", lambda response: statuses.append(response.status)
            if "/v1/images/" in response.url else None)
    for _ in range(2):  # one a minute: the first or the second is refused
        page.click("#go")
        wait_until(page, "!document.body.classList.contains('busy')")
        if 429 in statuses:
            break
    assert 429 in statuses
    banner = page.locator("#form-error")
    expect(banner).to_contain_text("Rate limit exceeded")
    expect(banner).to_contain_text("Please try again in")
    expect(page.locator("#go")).to_be_disabled()
    expect(page.locator("#go")).to_contain_text("Wait")
    page.screenshot(path=screenshots / "08-rate-limited.png")


def test_usable_at_a_phone_width(browser: Any, open_server: LiveServer,
                                 screenshots: Path) -> None:
    context = browser.new_context(viewport={"width": 380, "height": 800}, is_mobile=True,
                                  has_touch=True)
    phone = context.new_page()
    try:
        open_page(phone, open_server)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 380
        for field in ("#prompt", "#model", "#size", "#go"):
            box = phone.locator(field).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 380
        # Every control can be reached with the keyboard and has a label.
        unlabelled = phone.evaluate("""() => [...document.querySelectorAll(
            'input:not([type=radio]):not([type=file]), select, textarea')]
            .filter(e => !(e.labels && e.labels.length)).map(e => e.id)""")
        assert unlabelled == []
        phone.screenshot(path=screenshots / "09-phone.png", full_page=True)
    finally:
        context.close()

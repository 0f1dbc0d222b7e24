// The playground: generate, watch the image form from streamed partial images, edit with
// a painted mask, make variations, download; a bounded history in this browser.

import { chosenAdapters, describeAdapters, refreshAdapters, showAdapters } from "./adapters.js";
import { ApiError, apiKey, events, getJSON, request } from "./api.js";
import * as history from "./history.js";
import { Painter } from "./painter.js";
import { applyRules, choices, fillModels, followBackground, followN, rulesFor } from "./pickers.js";

const $ = (id) => document.getElementById(id);
const state = {
  doc: null,
  mode: "generate",
  busy: null, // the AbortController of the request in flight
  retryUntil: 0,
  objectUrls: [],
};
const painter = new Painter($("edit-base"), $("edit-mask"));

// ---------------------------------------------------------------- messages

function setStatus(text) {
  $("status").textContent = text;
}

function clearErrors() {
  for (const element of document.querySelectorAll(".field-error")) {
    if (element.id === "edit-unsupported") continue;
    element.hidden = true;
    element.textContent = "";
  }
  for (const element of document.querySelectorAll("[aria-invalid]")) {
    element.removeAttribute("aria-invalid");
  }
  $("form-error").hidden = true;
  $("form-error").textContent = "";
}

const FIELD_OF_PARAM = {
  prompt: "prompt", model: "model", size: "size", quality: "quality", style: "style",
  background: "background", output_format: "output-format", n: "n", seed: "seed",
  partial_images: "partial-images", num_inference_steps: "steps", guidance_scale: "guidance",
  negative_prompt: "negative-prompt", image: "edit-file", mask: "edit-mask",
};

/** The envelope's message next to the field it names, else above the form's buttons. */
function showError(error) {
  let message = error.message;
  if (error.status === 429 && error.retryAfter !== null) waitBeforeRetry(error.retryAfter);
  const slot = error.param && $(`${error.param}-error`);
  if (slot && !slot.closest("[hidden]:not(.field-error)")) {
    const folded = slot.closest("details");
    if (folded) folded.open = true;
    slot.textContent = message;
    slot.hidden = false;
    const field = $(FIELD_OF_PARAM[error.param] || "");
    if (field) {
      field.setAttribute("aria-invalid", "true");
      if (typeof field.focus === "function" && field.tagName !== "CANVAS") field.focus();
    }
    setStatus("The request was refused: see the message by the field.");
    return;
  }
  if (error.status === 401) {
    message += " Enter a valid API key.";
    openKeyDialog(error.message);
  }
  $("form-error").textContent = message;
  $("form-error").hidden = false;
  setStatus(error.status ? `Refused (${error.status}).` : "Failed.");
}

function waitBeforeRetry(seconds) {
  state.retryUntil = Date.now() + seconds * 1000;
  const tick = () => {
    const left = Math.ceil((state.retryUntil - Date.now()) / 1000);
    if (left <= 0) {
      $("go").disabled = false;
      $("go").textContent = goLabel();
      return;
    }
    $("go").disabled = true;
    $("go").textContent = `Wait ${left} s`;
    setTimeout(tick, 250);
  };
  tick();
}

// ---------------------------------------------------------------- the key

function openKeyDialog(message = "") {
  const dialog = $("key-dialog");
  $("key-input").value = apiKey.get();
  $("key-error").textContent = message;
  $("key-error").hidden = !message;
  $("key-forget").hidden = !apiKey.get();
  if (!dialog.open) dialog.showModal();
  $("key-input").focus();
}

$("key-button").addEventListener("click", () => openKeyDialog());
$("key-cancel").addEventListener("click", () => $("key-dialog").close());
$("key-forget").addEventListener("click", () => {
  apiKey.clear();
  $("key-input").value = "";
  $("key-dialog").close();
  updateKeyButton();
  setStatus("The key was forgotten.");
});
$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = $("key-input").value.trim();
  if (!value) return;
  const previous = apiKey.get();
  apiKey.set(value);
  try {
    await loadModels();
    $("key-dialog").close();
    updateKeyButton();
    setStatus("Key saved in this browser.");
  } catch (error) {
    if (previous) apiKey.set(previous); else apiKey.clear();
    $("key-error").textContent = error.message;
    $("key-error").hidden = false;
  }
});

function updateKeyButton() {
  $("key-button").textContent = apiKey.get() ? "API key ✓" : "API key";
}

// ---------------------------------------------------------------- pickers

async function loadModels() {
  const models = await getJSON("v1/models");
  const current = $("model").value;
  fillModels(state.doc, models.data);
  if (current && [...$("model").options].some((o) => o.value === current)) {
    $("model").value = current;
  }
  applyRules(state.doc, state.mode, { keepValues: false });
  await refreshAdapters($("model").value, state.mode);
}

function currentRules() {
  return rulesFor(state.doc, $("model").value);
}

function goLabel() {
  return state.mode === "edit" ? "Edit" : "Generate";
}

function setMode(mode) {
  state.mode = mode;
  $("edit-area").hidden = mode !== "edit";
  $("go").textContent = goLabel();
  applyRules(state.doc, mode);
  showAdapters(mode); // an edit may be drawn by another model (edit_model)
  clearErrors();
}

$("model").addEventListener("change", () => {
  applyRules(state.doc, state.mode, { keepValues: true });
  refreshAdapters($("model").value, state.mode);
});
// An adapters folder changes while the server runs: opening "More" asks again.
$("more").addEventListener("toggle", () => {
  if ($("more").open) refreshAdapters($("model").value, state.mode);
});
// A size typed in overrides the list: the list is greyed out meanwhile.
$("size-custom").addEventListener("input", () => {
  $("size").disabled = $("size-custom").value.trim() !== "";
});
$("n").addEventListener("input", () => followN(state.doc));
$("background").addEventListener("change", () => followBackground(state.doc));
for (const radio of document.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => setMode(radio.value));
}

// ---------------------------------------------------------------- requests

function randomSeed(n) {
  const max = state.doc.seed.max - (n - 1);
  const words = crypto.getRandomValues(new Uint32Array(1));
  return words[0] % (max + 1);
}

function intOf(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

/** The fields both routes share, following the chosen name's rules. */
function commonFields(rules) {
  const n = intOf("n") ?? 1;
  let seed = intOf("seed");
  if (seed === null) seed = randomSeed(Math.max(1, n));
  const fields = { model: $("model").value, prompt: $("prompt").value, n, seed };
  fields.size = $("size-custom").closest(".field").hidden || !$("size-custom").value.trim()
    ? $("size").value : $("size-custom").value.trim();
  fields.quality = $("quality").value;
  // b64_json keeps every image inside the page (the CSP allows data: and blob: images).
  if (rules.response_formats.length > 1) fields.response_format = "b64_json";
  if (rules.image_options) {
    fields.background = $("background").value;
    fields.output_format = $("output-format").value;
    const partials = intOf("partial-images") ?? 0;
    fields.stream = true;
    if (partials > 0) fields.partial_images = partials;
  }
  const steps = intOf("steps");
  if (steps !== null) fields.num_inference_steps = steps;
  const guidance = intOf("guidance");
  if (guidance !== null) fields.guidance_scale = guidance;
  const negative = $("negative-prompt").value;
  if (negative) fields.negative_prompt = negative;
  const lora = chosenAdapters(state.mode);
  if (lora) fields.lora = lora;
  return fields;
}

function b64Blob(b64, format) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: `image/${format || "png"}` });
}

function showLive(b64, format, caption) {
  $("live").hidden = false;
  $("empty").hidden = true;
  $("live-image").src = `data:image/${format || "png"};base64,${b64}`;
  $("live-caption").textContent = caption;
}

function begin(label) {
  clearErrors();
  const controller = new AbortController();
  state.busy = controller;
  $("go").disabled = true;
  $("stop").hidden = false;
  document.body.classList.add("busy");
  setStatus(label);
  return controller;
}

function end() {
  state.busy = null;
  $("stop").hidden = true;
  document.body.classList.remove("busy");
  if (Date.now() >= state.retryUntil) {
    $("go").disabled = false;
    $("go").textContent = goLabel();
  }
}

$("stop").addEventListener("click", () => state.busy?.abort());

/** Send the request and show what comes back: events as they come, or the response. */
async function run({ path, json, form, meta, streamed, prefix }) {
  const controller = begin(streamed ? "Waiting for the first image…" : "Drawing…");
  const started = performance.now();
  const results = [];
  try {
    const response = await request(path, { method: "POST", json, form, signal: controller.signal });
    if (streamed) {
      let partials = 0;
      for await (const event of events(response)) {
        if (event.name === `${prefix}.partial_image`) {
          partials += 1;
          $("live").dataset.partials = String(partials);
          const total = meta.partial_images || partials;
          showLive(event.data.b64_json, event.data.output_format,
            `Forming… partial image ${event.data.partial_image_index + 1} of ${total}`);
          setStatus(`Partial image ${partials} of ${total}`);
        } else if (event.name === `${prefix}.completed`) {
          results.push({ b64: event.data.b64_json, format: event.data.output_format,
                         size: event.data.size });
          $("live").dataset.completed = String(results.length);
          showLive(event.data.b64_json, event.data.output_format,
            `Done: image ${results.length} of ${meta.n}`);
          setStatus(`Image ${results.length} of ${meta.n} done`);
        }
      }
    } else {
      const body = await response.json();
      for (const item of body.data) {
        results.push({ b64: item.b64_json, format: body.output_format || "png",
                       revised: item.revised_prompt, size: body.size });
      }
    }
    $("live").hidden = true;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    await addResults(results, meta);
    setStatus(`${results.length} image${results.length === 1 ? "" : "s"} in ${seconds} s.`);
  } catch (error) {
    $("live").hidden = true;
    if (error.name === "AbortError") {
      setStatus("Stopped.");
    } else if (error instanceof ApiError) {
      showError(error);
    } else {
      showError(new ApiError(0, { message: `Unexpected answer: ${error.message}` }));
    }
    if (results.length) await addResults(results, meta);
  } finally {
    end();
  }
}

async function generate() {
  const rules = currentRules();
  const fields = commonFields(rules);
  if (rules.styles.length) fields.style = $("style").value;
  await run({
    path: "v1/images/generations", json: fields, streamed: Boolean(fields.stream),
    prefix: "image_generation", meta: { ...fields, kind: "generation" },
  });
}

async function edit() {
  const rules = currentRules();
  if (!rules.edits) {
    $("edit-unsupported").hidden = false;
    return;
  }
  if (!painter.hasImage) {
    showError(new ApiError(400, { message: "Choose an image to edit first.", param: "image" }));
    return;
  }
  const fields = commonFields(rules);
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    // The form's lora part is the JSON text of the list, as the API takes it.
    form.append(name, name === "lora" ? JSON.stringify(value) : String(value));
  }
  form.append("image", await painter.imageBlob(), "image.png");
  if (painter.painted) form.append("mask", await painter.maskBlob(), "mask.png");
  await run({
    path: "v1/images/edits", form, streamed: Boolean(fields.stream), prefix: "image_edit",
    meta: { ...fields, kind: painter.painted ? "edit (masked)" : "edit" },
  });
}

async function variations(source) {
  const rules = currentRules();
  const n = intOf("n") ?? 1;
  const seed = randomSeed(n);
  const form = new FormData();
  form.append("model", $("model").value);
  form.append("n", String(n));
  form.append("seed", String(seed));
  const size = `${source.width}x${source.height}`;
  if (rules.sizes.includes(size)) form.append("size", size);
  if (rules.response_formats.length > 1) form.append("response_format", "b64_json");
  const steps = intOf("steps");
  if (steps !== null) form.append("num_inference_steps", String(steps));
  const guidance = intOf("guidance");
  if (guidance !== null) form.append("guidance_scale", String(guidance));
  // Variations are drawn by the model that draws edits: its adapters.
  const lora = chosenAdapters("edit");
  if (lora) form.append("lora", JSON.stringify(lora));
  form.append("image", source.blob, "image.png");
  await run({
    path: "v1/images/variations", form, streamed: false,
    meta: { model: $("model").value, n, seed, prompt: `variation of: ${source.prompt}`,
            kind: "variation", lora },
  });
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (state.busy || Date.now() < state.retryUntil) return;
  if (!$("prompt").value.trim()) {
    showError(new ApiError(400, { message: "Write a prompt first.", param: "prompt" }));
    return;
  }
  (state.mode === "edit" ? edit() : generate());
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("form").requestSubmit();
});

// ---------------------------------------------------------------- results

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  state.objectUrls.push(url);
  return url;
}

function renderCard(entry, list, { prepend = true } = {}) {
  const card = $("card-template").content.firstElementChild.cloneNode(true);
  const url = objectUrl(entry.blob);
  const img = card.querySelector("img");
  img.src = url;
  img.alt = `${entry.kind} of “${entry.prompt}”`;
  if (entry.revised) {
    card.querySelector(".revised").hidden = false;
    card.querySelector(".revised").textContent = `Revised prompt: ${entry.revised}`;
  }
  const facts = [entry.model, entry.size, `seed ${entry.seed}`];
  if (entry.adapters) facts.push(entry.adapters);
  card.querySelector(".facts").textContent = facts.join(" · ");
  card.querySelector(".facts").title = entry.prompt;
  const download = card.querySelector(".download");
  download.href = url;
  download.download = `diffuserve-${entry.seed}.${entry.format === "jpeg" ? "jpg" : entry.format}`;
  download.setAttribute("aria-label", `Download the image with seed ${entry.seed}`);
  card.querySelector(".edit").addEventListener("click", () => editFrom(entry));
  card.querySelector(".vary").addEventListener("click", async () => {
    const bitmap = await createImageBitmap(entry.blob);
    // The variation's source is sent as a PNG, whatever format the result came in.
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    variations({ blob, width: bitmap.width, height: bitmap.height, prompt: entry.prompt });
  });
  card.dataset.seed = String(entry.seed);
  if (prepend) list.prepend(card); else list.append(card);
  return card;
}

async function addResults(results, meta) {
  $("empty").hidden = true;
  const cards = [];
  for (const [index, result] of results.entries()) {
    const entry = {
      created: Date.now(), kind: meta.kind, prompt: meta.prompt, model: meta.model,
      size: result.size || meta.size, seed: meta.seed + index, revised: result.revised || null,
      format: result.format || "png", blob: b64Blob(result.b64, result.format),
      adapters: describeAdapters(meta.lora) || null,
    };
    const bitmap = await createImageBitmap(entry.blob);
    entry.size = `${bitmap.width}x${bitmap.height}`;
    bitmap.close();
    cards.push(renderCard(entry, $("gallery")));
    await history.add(entry);
  }
  await renderHistory();
  const newest = cards.at(-1);
  if (newest) {
    newest.scrollIntoView({ block: "nearest" });
    newest.querySelector(".download").focus({ preventScroll: true });
  }
}

async function editFrom(entry) {
  $("mode-edit").checked = true;
  setMode("edit");
  await loadIntoPainter(entry.blob);
  if (!$("prompt").value) $("prompt").value = entry.prompt;
  $("prompt").focus();
  $("edit-area").scrollIntoView({ behavior: "smooth", block: "start" });
}

// ---------------------------------------------------------------- history

async function renderHistory() {
  const entries = await history.list();
  const list = $("history");
  list.replaceChildren();
  for (const entry of entries) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "history-item";
    button.title = `${entry.prompt} (${entry.model}, ${entry.size}, seed ${entry.seed})`;
    const img = document.createElement("img");
    img.src = objectUrl(entry.blob);
    img.alt = `${entry.prompt}, seed ${entry.seed}`;
    button.append(img);
    button.addEventListener("click", () => {
      $("prompt").value = entry.prompt.startsWith("variation of: ") ? $("prompt").value : entry.prompt;
      $("empty").hidden = true;
      renderCard(entry, $("gallery"));
      setStatus(`Restored from the history: seed ${entry.seed}.`);
    });
    item.append(button);
    list.append(item);
  }
  $("history-clear").hidden = entries.length === 0;
}

$("history-clear").addEventListener("click", async () => {
  await history.clear();
  await renderHistory();
  setStatus("History cleared.");
});

// ---------------------------------------------------------------- the painter

async function loadIntoPainter(blob) {
  clearErrors();
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch {
    showError(new ApiError(400, { message: "This file is not an image the browser can read.",
                                  param: "image" }));
    return;
  }
  painter.load(bitmap);
  bitmap.close();
  $("brush-size").max = String(Math.max(8, Math.round(Math.min(painter.width, painter.height) / 2)));
  $("brush-size").value = String(painter.size);
  $("canvas-wrap").hidden = false;
  $("tools").hidden = false;
  $("mask-hint").hidden = false;
  $("drop-label").textContent = `${painter.width}×${painter.height}: paint the area to change, or drop another image.`;
}

painter.onchange = () => {
  $("mask-hint").textContent = painter.painted
    ? "The painted area will be redrawn; the rest is kept."
    : "Paint the area to change. Without a mask the whole image is redrawn from it.";
};

$("edit-file").addEventListener("change", () => {
  const file = $("edit-file").files[0];
  if (file) loadIntoPainter(file);
});
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) loadIntoPainter(file);
});
for (const radio of document.querySelectorAll("input[name=tool]")) {
  radio.addEventListener("change", () => { painter.tool = radio.value; });
}
$("brush-size").addEventListener("input", () => { painter.size = Number($("brush-size").value); });
$("mask-clear").addEventListener("click", () => painter.clear());
$("mask-all").addEventListener("click", () => painter.fill());
document.addEventListener("keydown", (event) => {
  const typing = event.target.closest?.("input, textarea, select");
  if (typing || state.mode !== "edit" || !painter.hasImage || event.ctrlKey || event.metaKey) return;
  const key = event.key.toLowerCase();
  if (key === "b") $("tool-brush").click();
  else if (key === "e") $("tool-eraser").click();
  else if (key === "[" || key === "]") {
    const step = key === "]" ? 1.25 : 0.8;
    painter.size = Math.max(2, Math.round(painter.size * step));
    $("brush-size").value = String(painter.size);
  }
});

// ---------------------------------------------------------------- start

async function start() {
  updateKeyButton();
  try {
    state.doc = await getJSON("playground/rules.json");
  } catch (error) {
    showError(error);
    return;
  }
  window.diffuserve = { choices, rules: () => currentRules() }; // read by the browser tests
  await renderHistory();
  if (state.doc.keys_required && !apiKey.get()) {
    openKeyDialog();
    setStatus("This server asks for an API key.");
    return;
  }
  try {
    await loadModels();
    setStatus("Ready.");
  } catch (error) {
    showError(error);
  }
  document.body.dataset.ready = "true";
}

// Once the key dialog has loaded the models, the page is ready too.
$("key-dialog").addEventListener("close", () => {
  if ($("model").options.length) document.body.dataset.ready = "true";
});
start();

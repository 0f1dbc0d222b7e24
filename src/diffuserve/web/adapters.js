// The LoRA adapters of the chosen model, from playground/adapters.json (with the key, as
// every API call): asked again whenever the model changes or "More" opens, since a
// model's adapters folder changes while the server runs. What the user picked (and each
// scale) is kept by name, across models and refreshes; only the names the chosen model
// has now are sent.

import { getJSON } from "./api.js";

const $ = (id) => document.getElementById(id);
const state = {
  offer: null, // the last answer, or null: no adapters (or no answer)
  asked: 0, // answers to older questions are dropped
  picked: new Set(),
  scales: new Map(),
  part: "generations",
};

/** Ask the server for the adapters of `model` and show them for `mode`. */
export async function refreshAdapters(model, mode) {
  const ticket = ++state.asked;
  if (state.offer && state.offer.model !== model) {
    state.offer = null; // another model's adapters are never sent for this one
    showAdapters(mode);
  }
  let answer = null;
  if (model) {
    try {
      answer = await getJSON(`playground/adapters.json?model=${encodeURIComponent(model)}`);
    } catch {
      answer = null; // an older server, or no key yet: no adapters to offer
    }
  }
  if (ticket !== state.asked) return;
  state.offer = answer;
  showAdapters(mode);
}

function partOf(mode) {
  return mode === "edit" ? "edits" : "generations";
}

/** What the model applies of its own, in words ("pixel × 0.8"). */
function appliedText(applied) {
  return applied.map(({ name, scale }) => (scale === null ? `${name} (missing now)`
    : `${name} × ${scale}`)).join(", ");
}

/** The adapters one may choose for `mode` ("generate" or "edit"): the model's, less the
 * ones it applies of its own. */
function choosable(part) {
  const own = new Set(part.applied.map((adapter) => adapter.name));
  return part.adapters.filter((adapter) => !own.has(adapter.name));
}

function limitOf(part) {
  return Math.max(0, state.offer.max_adapters - part.applied.length);
}

/** Build the section for `mode`; hidden when the model has no adapters. */
export function showAdapters(mode) {
  state.part = partOf(mode);
  const section = $("adapters");
  const part = state.offer?.[state.part];
  const list = part ? choosable(part) : [];
  section.hidden = !part || (list.length === 0 && part.applied.length === 0);
  if (section.hidden) {
    $("adapter-list").replaceChildren();
    return;
  }
  const note = $("adapters-applied");
  note.hidden = part.applied.length === 0;
  note.textContent = note.hidden ? ""
    : `${part.model} applies of its own: ${appliedText(part.applied)}.`;
  $("adapter-list").replaceChildren(...list.map((adapter, index) => row(adapter, index)));
  followLimit();
}

function row(adapter, index) {
  const id = `adapter-${index}`;
  const picked = state.picked.has(adapter.name);
  const scale = state.scales.get(adapter.name) ?? adapter.scale;
  const item = document.createElement("li");
  item.className = "adapter";
  item.dataset.name = adapter.name;

  const check = document.createElement("input");
  check.type = "checkbox";
  check.id = id;
  check.checked = picked;
  check.setAttribute("aria-describedby", "adapters-hint");
  const name = document.createElement("label");
  name.htmlFor = id;
  name.textContent = adapter.name;

  const slider = scaleInput("range", `${id}-range`, scale, picked);
  const number = scaleInput("number", `${id}-scale`, scale, picked);
  number.inputMode = "decimal";
  const sliderLabel = hiddenLabel(slider.id, `Scale of ${adapter.name} (slider)`);
  const numberLabel = hiddenLabel(number.id, `Scale of ${adapter.name}`);
  number.setAttribute("aria-describedby", "lora-error");

  check.addEventListener("change", () => {
    if (check.checked) state.picked.add(adapter.name); else state.picked.delete(adapter.name);
    slider.disabled = number.disabled = !check.checked;
    followLimit();
  });
  const follow = (from, to) => from.addEventListener("input", () => {
    if (from.value === "" || !Number.isFinite(Number(from.value))) return;
    to.value = from.value;
    state.scales.set(adapter.name, Number(from.value));
  });
  follow(slider, number);
  follow(number, slider);
  item.append(check, name, sliderLabel, slider, numberLabel, number);
  return item;
}

function scaleInput(type, id, value, enabled) {
  const input = document.createElement("input");
  input.type = type;
  input.id = id;
  input.min = String(state.offer.min_scale);
  input.max = String(state.offer.max_scale);
  input.step = "0.05";
  input.value = String(value);
  input.disabled = !enabled;
  return input;
}

function hiddenLabel(target, text) {
  const label = document.createElement("label");
  label.htmlFor = target;
  label.className = "visually-hidden";
  label.textContent = text;
  return label;
}

/** No more than the model may stack: past the limit, the rest cannot be picked. */
function followLimit() {
  const part = state.offer[state.part];
  const limit = limitOf(part);
  const boxes = [...$("adapter-list").querySelectorAll("input[type=checkbox]")];
  const full = boxes.filter((box) => box.checked).length >= limit;
  for (const box of boxes) box.disabled = full && !box.checked;
  $("adapters-hint").textContent = full
    ? `At most ${limit} adapters${part.applied.length ? " besides the model's own" : ""}: `
      + "uncheck one to choose another."
    : `Choose up to ${limit}, each at its scale (${state.offer.min_scale} to `
      + `${state.offer.max_scale}; 0: as if absent).`;
}

/** `lora` as the request for `mode` sends it: the picked adapters the model that draws
 * it has now, each at its scale; null (not sent) when there are none. */
export function chosenAdapters(mode) {
  const part = state.offer?.[partOf(mode)];
  if (!part) return null;
  const chosen = choosable(part)
    .filter((adapter) => state.picked.has(adapter.name))
    .slice(0, limitOf(part))
    .map((adapter) => ({ name: adapter.name,
                         scale: state.scales.get(adapter.name) ?? adapter.scale }));
  return chosen.length ? chosen : null;
}

/** `lora` as a card's facts say it ("pixel × 0.8, ink × 1"). */
export function describeAdapters(lora) {
  return lora ? lora.map(({ name, scale }) => `${name} × ${scale}`).join(", ") : "";
}

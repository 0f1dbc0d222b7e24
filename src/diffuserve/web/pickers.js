// The pickers follow the chosen name's rules, read from /playground/rules.json (the
// tables the API validates with): sizes, qualities, styles, n, the seed's range, and the
// GPT-image fields only where the name takes them.

const $ = (id) => document.getElementById(id);

export function rulesFor(doc, model) {
  return doc.names[model] || doc.other;
}

function fill(select, values, chosen, labels = {}) {
  const previous = chosen ?? select.value;
  select.replaceChildren(...values.map((value) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = labels[value] || value;
    return option;
  }));
  if (values.includes(previous)) select.value = previous;
}

function show(id, visible) {
  const field = $(id).closest(".field");
  field.hidden = !visible;
  $(id).disabled = !visible;
}

const SIZE_LABELS = { auto: "auto (1024×1024)" };

/** Fill the model list from /v1/models: served models first, then OpenAI's names, each
 * shown with the served model that draws for it (the `root` of its entry). */
export function fillModels(doc, models) {
  const select = $("model");
  const own = models.filter((model) => !(model.id in doc.names));
  const openai = models.filter((model) => model.id in doc.names);
  const groups = [["Models on this server", own], ["OpenAI names", openai]];
  select.replaceChildren(...groups.filter(([, list]) => list.length).map(([label, list]) => {
    const group = document.createElement("optgroup");
    group.label = label;
    for (const model of list) {
      const option = document.createElement("option");
      const root = model.root || model.id;
      option.value = model.id;
      option.dataset.root = root;
      option.textContent = root === model.id ? model.id : `${model.id} → ${root}`;
      group.append(option);
    }
    return group;
  }));
}

/** The line under the model picker: what the chosen name is drawn by, and for the
 * built-in model what it can draw, the command that serves a real model and where that
 * is explained. */
export function describeModel(doc) {
  const about = $("model-about");
  const option = $("model").selectedOptions[0];
  const root = option?.dataset.root;
  const builtin = doc.builtin;
  if (!option || !root) {
    about.hidden = true;
    return;
  }
  const drawnBy = root === option.value ? [] : [`Drawn by ${root}. `];
  if (builtin && root === builtin.name) {
    const command = document.createElement("code");
    command.textContent = builtin.serve;
    const who = root === option.value ? `${root} is the built-in model`
      : `Drawn by ${root}, the built-in model`;
    about.replaceChildren(`${who}: it ${builtin.about}, e.g. `, command,
      ` (see ${builtin.guide}).`);
  } else {
    about.replaceChildren(...drawnBy);
  }
  about.dataset.root = root;
  about.hidden = about.textContent === "";
}

/** Rebuild every picker for the chosen model and mode ("generate" or "edit"). */
export function applyRules(doc, mode, { keepValues = true } = {}) {
  const model = $("model").value;
  const rules = rulesFor(doc, model);
  const keep = (value) => (keepValues ? value : null);
  describeModel(doc);

  fill($("size"), rules.sizes, keep($("size").value) ?? rules.default_size, SIZE_LABELS);
  if (!keepValues || !rules.sizes.includes($("size").value)) $("size").value = rules.default_size;
  show("size-custom", rules.free_size);
  $("size").disabled = rules.free_size && $("size-custom").value.trim() !== "";
  // The name's own bounds (gpt-image-2's and a served model's differ), in words.
  $("size-custom").title = rules.size_limits?.hint ?? "";

  fill($("quality"), rules.qualities, keep($("quality").value) ?? rules.default_quality);
  if (!rules.qualities.includes($("quality").value)) $("quality").value = rules.default_quality;

  // Edits take no style.
  show("style", rules.styles.length > 0 && mode === "generate");
  fill($("style"), rules.styles, keep($("style").value) ?? rules.default_style);
  if (rules.default_style && !rules.styles.includes($("style").value)) {
    $("style").value = rules.default_style;
  }

  const options = rules.image_options;
  show("background", options);
  fill($("background"), doc.backgrounds, keep($("background").value) ?? doc.default_background);
  show("output-format", options);
  fill($("output-format"), doc.output_formats,
    keep($("output-format").value) ?? doc.default_output_format);
  show("partial-images", options);
  $("partial-images").max = String(doc.max_partial_images);
  followBackground(doc);

  const n = $("n");
  n.min = String(rules.min_n);
  n.max = String(rules.max_n);
  n.disabled = rules.max_n === 1;
  if (!keepValues || Number(n.value) > rules.max_n || Number(n.value) < rules.min_n) {
    n.value = "1";
  }
  followN(doc);

  $("steps").max = String(doc.num_inference_steps.max);
  $("guidance").max = String(doc.guidance_scale.max);
  $("prompt").maxLength = rules.max_prompt_length;

  const editable = rules.edits;
  $("edit-unsupported").hidden = mode !== "edit" || editable;
  return rules;
}

/** jpeg has no alpha: with a transparent background only png and webp are offered. */
export function followBackground(doc) {
  const transparent = $("background").value === "transparent";
  for (const option of $("output-format").options) {
    option.disabled = transparent && !doc.transparent_formats.includes(option.value);
  }
  if ($("output-format").selectedOptions[0]?.disabled) $("output-format").value = "png";
}

/** Image i of a request uses seed + i: the seed's upper bound falls as n grows. */
export function followN(doc) {
  const n = Math.max(1, Number.parseInt($("n").value, 10) || 1);
  $("seed").min = String(doc.seed.min);
  $("seed").max = String(doc.seed.max - (n - 1));
}

/** The picker values as the page shows them (the browser tests compare these). */
export function choices() {
  const values = (id) => $(id).closest(".field").hidden ? [] : [...$(id).options].map((o) => o.value);
  return {
    sizes: values("size"), qualities: values("quality"), styles: values("style"),
    backgrounds: values("background"), output_formats: values("output-format"),
    max_n: Number($("n").max), seed_max: Number($("seed").max),
    free_size: !$("size-custom").closest(".field").hidden,
  };
}

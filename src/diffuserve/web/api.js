// The API as the page uses it: relative URLs (so the page works under a --public-url
// prefix), the key only ever in the Authorization header, OpenAI's error envelope turned
// into an ApiError, and Server-Sent Events read from a POST with fetch() (EventSource
// can neither POST nor send headers).

const KEY_ITEM = "diffuserve.apiKey";

export const apiKey = {
  get() {
    try { return localStorage.getItem(KEY_ITEM) || ""; } catch { return ""; }
  },
  set(value) {
    try { localStorage.setItem(KEY_ITEM, value); } catch { /* private mode: per page */ }
  },
  clear() {
    try { localStorage.removeItem(KEY_ITEM); } catch { /* nothing kept */ }
  },
};

/** An error answer of the API: OpenAI's envelope, the status and the wait of a 429. */
export class ApiError extends Error {
  constructor(status, error, retryAfter = null) {
    super(error.message || `The server answered ${status}.`);
    this.status = status;
    this.type = error.type || null;
    // "image[0]" names the field "image"; "lora[1].scale" and "lora.name" name "lora".
    this.param = typeof error.param === "string" ? error.param.replace(/[[.].*$/, "") : null;
    this.code = error.code || null;
    this.retryAfter = retryAfter;
  }
}

function url(path) {
  return new URL(path, document.baseURI);
}

async function errorOf(response) {
  let error = { message: `The server answered ${response.status} ${response.statusText}.` };
  try {
    const body = await response.json();
    if (body && typeof body.error === "object" && body.error) error = body.error;
  } catch { /* not JSON: keep the status line */ }
  const wait = Number.parseInt(response.headers.get("retry-after") || "", 10);
  return new ApiError(response.status, error, Number.isFinite(wait) ? wait : null);
}

/** fetch() with the key; resolves to the Response of a 2xx, else throws ApiError. */
export async function request(path, { method = "GET", json, form, signal, accept } = {}) {
  const headers = {};
  const key = apiKey.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (accept) headers.Accept = accept;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser writes the multipart boundary
  }
  let response;
  try {
    response = await fetch(url(path), {
      method, headers, body, signal, cache: "no-store", credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, { message: "The server could not be reached." });
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJSON(path, options) {
  return (await request(path, options)).json();
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  const text = data.join("\n");
  if (text === "[DONE]") return { name: "done", data: null };
  const parsed = JSON.parse(text);
  if (parsed && typeof parsed === "object" && parsed.error) {
    throw new ApiError(200, parsed.error);
  }
  return { name: parsed.type || name, data: parsed };
}

/** The events of a streamed answer, one {name, data} at a time. */
export async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + value).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event && event.name === "done") return;
        if (event) yield event;
      }
    }
    const last = parseEvent(buffer);
    if (last && last.name !== "done") yield last;
  } finally {
    reader.releaseLock();
  }
}

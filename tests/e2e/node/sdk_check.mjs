// Drives a diffuserve server with the official openai-node SDK and prints what it saw as
// one JSON object; tests/e2e/test_openai_node.py checks it.
// Usage: node sdk_check.mjs BASE_URL API_KEY
import OpenAI, { toFile } from "openai";
import zlib from "node:zlib";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const out = {};

const models = await client.models.list();
out.models = models.data.map((model) => [model.id, model.shutdown_date ?? null]);

const image = await client.images.generate({
  model: "gpt-image-2", prompt: "a red apple", size: "1280x720", output_format: "webp",
  output_compression: 60, n: 2,
});
out.generate = {
  count: image.data.length,
  magic: Buffer.from(image.data[0].b64_json, "base64").subarray(0, 4).toString("latin1"),
  output_format: image.output_format, size: image.size, quality: image.quality,
  background: image.background, usage: image.usage,
};

const stream = await client.images.generate({
  model: "gpt-image-2", prompt: "a rocket", size: "256x256", stream: true, partial_images: 2,
});
out.stream = [];
for await (const event of stream) {
  out.stream.push([event.type, event.partial_image_index ?? null, event.b64_json.length > 0]);
}

// A 64×64 PNG, RGBA, written by hand: red, with its top half fully transparent when
// `clearTop` (the mask) — so no image library is needed here.
function png(clearTop) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const byte of buf) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const length = Buffer.alloc(4); length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const sum = Buffer.alloc(4); sum.writeUInt32BE(crc(body));
    return Buffer.concat([length, body, sum]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(64, 0); header.writeUInt32BE(64, 4);
  header[8] = 8; header[9] = 6;  // 8 bits, RGBA
  const rows = [];
  for (let y = 0; y < 64; y++) {
    const row = [0];
    for (let x = 0; x < 64; x++) row.push(200, 30, 30, clearTop && y < 32 ? 0 : 255);
    rows.push(Buffer.from(row));
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", header),
                        chunk("IDAT", zlib.deflateSync(Buffer.concat(rows))),
                        chunk("IEND", Buffer.alloc(0))]);
}

const edited = await client.images.edit({
  model: "gpt-image-2", prompt: "a blue sky", size: "256x256",
  image: await toFile(png(false), "image.png", { type: "image/png" }),
  mask: await toFile(png(true), "mask.png", { type: "image/png" }),
});
out.edit = { count: edited.data.length, size: edited.size,
             image_tokens: edited.usage.input_tokens_details.image_tokens };

const editStream = await client.images.edit({
  model: "gpt-image-2", prompt: "a blue sky", stream: true, partial_images: 1,
  image: [await toFile(png(false), "image.png", { type: "image/png" })],
});
out.edit_stream = [];
for await (const event of editStream) out.edit_stream.push(event.type);

const variation = await client.images.createVariation({
  image: await toFile(png(false), "image.png", { type: "image/png" }), n: 2, size: "256x256",
  response_format: "b64_json",
});
out.variations = variation.data.length;

try {
  await client.images.generate({ model: "dall-e-3", prompt: "a", size: "7x7" });
  out.error = null;
} catch (error) {
  out.error = { name: error.constructor.name, status: error.status, code: error.code,
                param: error.param };
}

console.log(JSON.stringify(out));

// Drives a diffuserve server with the official openai-node SDK and prints what it saw as
// one JSON object; tests/e2e/test_openai_node.py checks it.
// Usage: node sdk_check.mjs BASE_URL API_KEY
import OpenAI from "openai";

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

try {
  await client.images.generate({ model: "dall-e-3", prompt: "a", size: "7x7" });
  out.error = null;
} catch (error) {
  out.error = { name: error.constructor.name, status: error.status, code: error.code,
                param: error.param };
}

console.log(JSON.stringify(out));

// Drive /ollama with Ollama's official JS client, as tests/web/ollama/test_routes.py runs it: print what came back.
import { Ollama } from "ollama";

const [host, key, model] = process.argv.slice(2);
const client = new Ollama({ host, headers: { Authorization: `Bearer ${key}` } });
const messages = [{ role: "user", content: "hello there" }];
const options = { temperature: 0.8, seed: 7 };

const whole = await client.chat({ model, messages, options });
let streamed = "";
let last = null;
for await (const part of await client.chat({ model, messages, options, stream: true })) {
  streamed += part.message.content;
  last = part;
}
const generated = await client.generate({ model, prompt: "hello there", options: { num_predict: 2 } });
const listed = await client.list();
const shown = await client.show({ model });
const running = await client.ps();
const version = await client.version();
let refused = null;
try {
  await client.chat({ model, messages, options: { not_an_option: 1 } });
} catch (error) {
  refused = { error: error.error, status: error.status_code };
}
console.log(
  JSON.stringify({
    whole: whole.message.content,
    streamed,
    last,
    generated,
    models: listed.models.map((entry) => entry.name),
    capabilities: shown.capabilities,
    running: running.models.map((entry) => entry.name),
    version: version.version,
    refused,
  }),
);

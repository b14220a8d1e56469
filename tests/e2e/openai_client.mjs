// The official OpenAI client library (the `openai` npm package) against dinfer-server: a
// completion, a streamed chat, the same chat whole, and two errors (a bad request, a wrong key).
// Prints what it got as one JSON object; tests/e2e/openai_client.sh checks it.
//   BASE=http://host:port KEY=token MODEL=name node openai_client.mjs
import OpenAI from 'openai';

const client = new OpenAI({ baseURL: `${process.env.BASE}/v1`, apiKey: process.env.KEY, maxRetries: 0 });
const model = process.env.MODEL;
const messages = [
  { role: 'system', content: 'Tell a story.' },
  { role: 'user', content: [{ type: 'text', text: 'Once upon a time' }] },
];
const out = {};

const c = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 20, temperature: 0 });
out.completion = { object: c.object, text: c.choices[0].text, finish: c.choices[0].finish_reason, usage: c.usage };

const stream = await client.chat.completions.create({
  model, messages, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true },
});
const s = { text: '', role: null, finish: null, usage: null, chunks: 0 };
for await (const chunk of stream) {
  s.chunks++;
  for (const choice of chunk.choices) {
    if (choice.delta.role) s.role = choice.delta.role;
    if (choice.delta.content) s.text += choice.delta.content;
    if (choice.finish_reason) s.finish = choice.finish_reason;
  }
  if (chunk.usage) s.usage = chunk.usage;
}
out.chat_stream = s;

const w = await client.chat.completions.create({ model, messages, max_completion_tokens: 20, temperature: 0 });
out.chat = { object: w.object, text: w.choices[0].message.content, role: w.choices[0].message.role,
             finish: w.choices[0].finish_reason, usage: w.usage };

const caught = async (f) => {
  try {
    await f();
    return null;
  } catch (e) {
    return { name: e.constructor.name, status: e.status, param: e.param ?? null, type: e.type ?? null,
             message: e.error?.message ?? e.message };
  }
};
out.bad_request = await caught(() => client.chat.completions.create({ model, messages: [] }));
out.unknown_role = await caught(() => client.chat.completions.create({ model, messages: [{ role: 'wizard', content: 'x' }] }));
const wrong = new OpenAI({ baseURL: `${process.env.BASE}/v1`, apiKey: 'wrong-key', maxRetries: 0 });
out.wrong_key = await caught(() => wrong.models.list());
out.models = (await client.models.list()).data.map((m) => m.id);
console.log(JSON.stringify(out));

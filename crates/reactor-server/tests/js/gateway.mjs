// The unmodified `openai` npm client against Reactor's gateway (driven by tests/gateway.rs):
// chat, a streamed chat (OpenAI-compatible and Anthropic upstreams), embeddings, the models
// list, and errors in OpenAI's shape.
import assert from 'node:assert/strict'
import OpenAI from 'openai'

const client = new OpenAI({ baseURL: process.env.REACTOR_GATEWAY_URL, apiKey: process.env.REACTOR_SERVICE_KEY, maxRetries: 0 })

const chat = await client.chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'hi' }] })
assert.equal(chat.choices[0].message.content, 'ok-a says hi')
assert.equal(chat.usage.total_tokens, 7)

const { data, response } = await client.chat.completions
  .create({ model: 'fallback', messages: [{ role: 'user', content: 'hi' }] })
  .withResponse()
assert.equal(response.headers.get('x-reactor-gateway-target'), 'fake/ok-b')
assert.equal(data.choices[0].message.content, 'ok-b says hi')

const stream = await client.chat.completions.create({ model: 'chat', stream: true, messages: [{ role: 'user', content: 'hi' }] })
let text = ''
for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ''
assert.equal(text, 'part0 part1 part2 ')

// An Anthropic provider behind the same client, streamed and not.
const claude = await client.chat.completions.create({ model: 'claude', messages: [{ role: 'user', content: 'hi' }] })
assert.equal(claude.choices[0].message.content, 'Hello from claude')
let streamed = ''
for await (const chunk of await client.chat.completions.create({ model: 'claude', stream: true, messages: [{ role: 'user', content: 'hi' }] })) {
  streamed += chunk.choices[0]?.delta?.content ?? ''
}
assert.equal(streamed, 'Hello')

const emb = await client.embeddings.create({ model: 'chat', input: 'hello' })
assert.deepEqual(emb.data[0].embedding, [0.25, -0.5, 1])

const models = []
for await (const m of client.models.list()) models.push(m.id)
assert.ok(models.includes('balanced'), models.join(','))

await assert.rejects(client.chat.completions.create({ model: 'nope', messages: [] }), (e) => {
  assert.ok(e instanceof OpenAI.NotFoundError, String(e))
  assert.equal(e.code, 'model_not_found')
  return true
})
await assert.rejects(client.chat.completions.create({ model: 'limited', messages: [] }), (e) => {
  assert.ok(e instanceof OpenAI.RateLimitError, String(e))
  return true
})
console.log('openai client: ok')

// reactor.ai against a real `reactor dev` whose gateway routes to a fake OpenAI upstream on
// loopback: chat, a stream read chunk by chunk, embeddings, models, and errors as values.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { createClient, MemoryStorage } from '@reactor/client'
import { startDev } from './dev.mjs'

let upstream
let dev
before(async () => {
  upstream = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      const r = JSON.parse(body)
      if (req.url === '/v1/embeddings') {
        res.setHeader('content-type', 'application/json')
        return res.end(JSON.stringify({ object: 'list', model: r.model, data: [{ object: 'embedding', index: 0, embedding: [1, 2] }] }))
      }
      if (r.model === 'busy') {
        res.writeHead(429, { 'retry-after': '3', 'content-type': 'application/json' })
        return res.end('{"error":{"message":"busy"}}')
      }
      if (r.stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream' })
        const words = ['Once ', 'upon ', 'a time']
        words.forEach((w, i) =>
          setTimeout(() => {
            res.write(`data: ${JSON.stringify({ id: 's', object: 'chat.completion.chunk', created: 1, model: r.model, choices: [{ index: 0, delta: { content: w }, finish_reason: null }] })}\n\n`)
            if (i === words.length - 1) res.end('data: [DONE]\n\n')
          }, 50 * i),
        )
        return
      }
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ id: 'c', object: 'chat.completion', created: 1, model: r.model, choices: [{ index: 0, message: { role: 'assistant', content: `${r.model}: ${r.messages.at(-1).content}` }, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } }))
    })
  })
  await new Promise((r) => upstream.listen(0, '127.0.0.1', r))
  const url = `http://127.0.0.1:${upstream.address().port}/v1`
  dev = await startDev([], {
    manifest: `
[[gateway.providers]]
name = "up"
kind = "openai-compatible"
base_url = "${url}"

[[gateway.models]]
name = "fast"
targets = [{ provider = "up", model = "tiny" }]

[[gateway.models]]
name = "busy"
targets = [{ provider = "up", model = "busy" }]
`,
  })
})
after(() => {
  dev?.stop()
  upstream?.close()
})

const client = (key) => createClient(dev.endpoint, key, { auth: { storage: new MemoryStorage() } })

test('a signed-in user chats, streams, embeds and lists models', async () => {
  const reactor = client(dev.keys.public)
  const { error: signUpError } = await reactor.auth.signUp({ email: 'ai@example.com', password: 'correct horse battery' })
  assert.equal(signUpError, null)
  const { data, error } = await reactor.ai.chat({ model: 'fast', messages: [{ role: 'user', content: 'hello' }] })
  assert.equal(error, null)
  assert.equal(data.choices[0].message.content, 'tiny: hello')
  assert.equal(data.target, 'up/tiny')

  const { data: stream } = await reactor.ai.stream({ model: 'fast', messages: [{ role: 'user', content: 'a story' }] })
  let story = ''
  for await (const chunk of stream) story += chunk.choices[0]?.delta?.content ?? ''
  assert.equal(story, 'Once upon a time')

  const { data: vectors } = await reactor.ai.embeddings({ model: 'fast', input: 'x' })
  assert.deepEqual(vectors.data[0].embedding, [1, 2])
  const { data: models } = await reactor.ai.models()
  assert.deepEqual(models.map((m) => m.id), ['fast', 'busy'])
})

test('errors are values: unknown model, rate limit, anonymous caller, no server', async () => {
  const admin = client(dev.keys.service)
  const missing = await admin.ai.chat({ model: 'gpt-4', messages: [] })
  assert.equal(missing.data, null)
  assert.equal(missing.error.status, 404)
  assert.equal(missing.error.code, 'model_not_found')
  const busy = await admin.ai.chat({ model: 'busy', messages: [{ role: 'user', content: 'x' }] })
  assert.equal(busy.error.status, 429)
  assert.equal(busy.error.retryAfter, 3)
  const anonymous = await client(dev.keys.public).ai.chat({ model: 'fast', messages: [] })
  assert.equal(anonymous.error.status, 401)
  const down = await createClient('http://127.0.0.1:1', 'rk_pub_x').ai.models()
  assert.equal(down.error.code, 'FETCH_ERROR')
})

// reactor.functions against a real `reactor dev` running real handlers.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient, MemoryStorage } from '@reactor/client'
import { startDev } from './dev.mjs'

const ECHO = `export default async (req: Request): Promise<Response> => {
  const url = new URL(req.url)
  if (url.pathname.endsWith('/teapot')) return Response.json({ brewing: false }, { status: 418 })
  if (url.pathname.endsWith('/text')) return new Response('plain words', { headers: { 'content-type': 'text/plain' } })
  if (url.pathname.endsWith('/throw')) throw new Error('handler broke')
  if (url.pathname.endsWith('/stream')) {
    let i = 0
    return new Response(new ReadableStream({
      pull(c) { if (i === 3) c.close(); else c.enqueue(new TextEncoder().encode('part' + i++ + ';')) },
    }))
  }
  const text = await req.text()
  return Response.json({
    method: req.method,
    path: url.pathname,
    query: url.search,
    body: text && req.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text || null,
    type: req.headers.get('content-type'),
    trace: req.headers.get('x-trace'),
    user: req.headers.get('x-reactor-user-id'),
    org: req.headers.get('x-reactor-org-id'),
  })
}
`

let dev
before(async () => {
  dev = await startDev([], { functions: { echo: { 'index.ts': ECHO } } })
})
after(() => dev?.stop())

const client = () => createClient(dev.endpoint, dev.keys.public, { auth: { storage: new MemoryStorage() } })

test('invoke sends JSON and reads JSON back, with the caller verified', async () => {
  const reactor = client()
  const anon = await reactor.functions.invoke('echo', { body: { name: 'Ada' } })
  assert.equal(anon.error, null)
  assert.equal(anon.status, 200)
  assert.deepEqual(anon.data, {
    method: 'POST',
    path: '/fn/v1/echo',
    query: '',
    body: { name: 'Ada' },
    type: 'application/json',
    trace: null,
    user: null,
    org: null,
  })

  const signed = await reactor.auth.signUp({ email: 'fn@example.com', password: 'correct horse battery' })
  assert.equal(signed.error, null)
  const org = await reactor.auth.orgs.create({ name: 'Acme', slug: 'acme-fn' })
  assert.equal(org.error, null)
  reactor.org = 'acme-fn'
  const asUser = await reactor.functions.invoke('echo', {
    method: 'PUT',
    path: '/items/7?full=1',
    headers: { 'x-trace': 'abc' },
    body: 'not json',
  })
  assert.equal(asUser.error, null)
  assert.equal(asUser.data.method, 'PUT')
  assert.equal(asUser.data.path, '/fn/v1/echo/items/7')
  assert.equal(asUser.data.query, '?full=1')
  assert.equal(asUser.data.trace, 'abc')
  assert.equal(asUser.data.body, 'not json')
  assert.equal(asUser.data.type, 'text/plain;charset=UTF-8')
  assert.equal(asUser.data.user, signed.data.user.id)
  assert.equal(asUser.data.org, org.data.id)
})

test('answers are parsed by type; errors never throw', async () => {
  const reactor = client()
  const text = await reactor.functions.invoke('echo', { path: '/text' })
  assert.equal(text.data, 'plain words')

  const teapot = await reactor.functions.invoke('echo', { path: '/teapot' })
  assert.equal(teapot.data, null)
  assert.equal(teapot.error.code, 'function_http_error')
  assert.equal(teapot.error.status, 418)
  assert.deepEqual(teapot.error.context, { brewing: false })

  const broke = await reactor.functions.invoke('echo', { path: '/throw' })
  assert.equal(broke.error.code, 'function_error')
  assert.equal(broke.status, 500)
  assert.match(broke.error.details, /handler broke/, 'reactor dev shows why')

  const missing = await reactor.functions.invoke('nope')
  assert.equal(missing.error.code, 'function_not_found')
  assert.equal(missing.error.status, 404)
  assert.match(missing.error.hint, /reactor functions list/)

  const offline = await createClient('http://127.0.0.1:1', dev.keys.public).functions.invoke('echo')
  assert.equal(offline.error.code, 'FETCH_ERROR')
})

test('a streamed answer can be read as it comes', async () => {
  const { response, error } = await client().functions.invoke('echo', { path: '/stream', stream: true })
  assert.equal(error, null)
  const parts = []
  const decoder = new TextDecoder()
  for await (const chunk of response.body) parts.push(decoder.decode(chunk))
  assert.equal(parts.join(''), 'part0;part1;part2;')
})

// reactor.connect against a real `reactor dev` and a fake OAuth 2.0 provider (authorize, token
// and an API, on loopback): the dance as a browser makes it, the connection listed, a call
// through the proxy, Reactor's refusals as errors, deletion; and an API-key connection.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { createClient, MemoryStorage } from '@reactor/client'
import { startDev } from './dev.mjs'

let provider
let providerUrl
const seen = []

function startProvider() {
  return new Promise((resolve) => {
    provider = http.createServer((req, res) => {
      const url = new URL(req.url, 'http://x')
      let body = ''
      req.on('data', (c) => (body += c))
      req.on('end', () => {
        if (url.pathname === '/oauth/authorize') {
          const back = new URL(url.searchParams.get('redirect_uri'))
          back.searchParams.set('code', 'the-code')
          back.searchParams.set('state', url.searchParams.get('state'))
          res.writeHead(302, { location: back.toString() }).end()
        } else if (url.pathname === '/oauth/token') {
          const form = new URLSearchParams(body)
          const ok = form.get('code') === 'the-code' && form.get('client_secret') === 'sdk-secret' && form.get('code_verifier')
          res.writeHead(ok ? 200 : 400, { 'content-type': 'application/json' })
          res.end(JSON.stringify(ok ? { access_token: 'tok-1', refresh_token: 'ref-1', expires_in: 3600 } : { error: 'invalid_grant' }))
        } else {
          seen.push({ path: url.pathname, auth: req.headers.authorization, apikey: req.headers.apikey })
          const status = url.pathname.endsWith('/missing') ? 404 : 200
          res.writeHead(status, { 'content-type': 'application/json' })
          res.end(JSON.stringify({ path: url.pathname, auth: req.headers.authorization }))
        }
      })
    })
    provider.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${provider.address().port}`))
  })
}

let dev
before(async () => {
  providerUrl = await startProvider()
  dev = await startDev([], {
    manifest: `
[[connect.integrations]]
name = "acme"
provider = "oauth2"
client_id = "sdk"
client_secret = "ACME_SECRET"
redirect_origins = ["http://app.test"]
authorization_url = "${providerUrl}/oauth/authorize"
token_url = "${providerUrl}/oauth/token"
base_url = "${providerUrl}/api"

[[connect.integrations]]
name = "keys"
provider = "api-key"
base_url = "${providerUrl}/api"
`,
  })
  const service = createClient(dev.endpoint, dev.keys.service, { auth: { storage: new MemoryStorage() } })
  const res = await fetch(`${dev.endpoint}/v1/secrets/ACME_SECRET`, {
    method: 'PUT',
    headers: { apikey: dev.keys.service, 'content-type': 'application/json' },
    body: JSON.stringify({ value: 'sdk-secret' }),
  })
  assert.equal(res.status, 204)
  assert.ok(service)
})
after(() => {
  dev?.stop()
  provider?.close()
})

const user = async (email) => {
  const reactor = createClient(dev.endpoint, dev.keys.public, { auth: { storage: new MemoryStorage() } })
  const { error } = await reactor.auth.signUp({ email, password: 'correct horse battery' })
  assert.equal(error, null)
  return reactor
}

/** What a browser does with a redirect: the next Location, cookies kept and sent. */
const jar = []
const follow = async (url) => {
  const res = await fetch(url, { redirect: 'manual', headers: jar.length ? { cookie: jar.join('; ') } : {} })
  for (const set of res.headers.getSetCookie()) jar.push(set.split(';')[0])
  assert.ok(res.status >= 300 && res.status < 400, `${url}: ${res.status}`)
  return res.headers.get('location')
}

test('a user connects through the browser dance, lists, proxies and deletes', async () => {
  const reactor = await user('ada@example.com')
  const { data: integrations } = await reactor.connect.integrations()
  assert.deepEqual(integrations.map((i) => [i.name, i.auth_mode]), [['acme', 'oauth2'], ['keys', 'api_key']])

  let left
  const { data: session, error } = await reactor.connect.connect('acme', { redirectTo: 'http://app.test/back', navigate: (u) => (left = u) })
  assert.equal(error, null)
  assert.equal(left, session.authorize_url, 'the page left for the authorize URL')
  const toProvider = await follow(left)
  assert.ok(toProvider.startsWith(`${providerUrl}/oauth/authorize?`), toProvider)
  const back = await follow(await follow(toProvider))
  const landed = new URL(back)
  assert.equal(landed.origin + landed.pathname, 'http://app.test/back')
  const id = landed.searchParams.get('connection_id')

  const { data: list } = await reactor.connect.list()
  assert.deepEqual(list.map((c) => [c.id, c.integration, c.status]), [[id, 'acme', 'active']])
  assert.ok(!JSON.stringify(list).includes('tok-1'), 'no credentials in a listing')

  const { data: response, error: proxyError } = await reactor.connect.proxy(id, '/me')
  assert.equal(proxyError, null)
  assert.equal(response.status, 200)
  assert.deepEqual(await response.json(), { path: '/api/me', auth: 'Bearer tok-1' })
  assert.equal(seen.at(-1).apikey, undefined, "Reactor's key never reaches the provider")
  // The provider's own 404 is data; Reactor's refusal is an error.
  const { data: missing } = await reactor.connect.proxy(id, 'missing')
  assert.equal(missing.status, 404)
  const { data: none, error: unknown } = await reactor.connect.proxy('5f0c0c8e-0000-4000-8000-000000000000', '/me')
  assert.equal(none, null)
  assert.equal(unknown.code, 'connection_not_found')

  // Another user sees none of it.
  const bob = await user('bob@example.com')
  assert.deepEqual((await bob.connect.list()).data, [])
  assert.equal((await bob.connect.get(id)).error.status, 404)

  assert.equal((await reactor.connect.delete(id)).error, null)
  assert.deepEqual((await reactor.connect.list()).data, [])
})

test('an API key connection; a redirect to an origin not allowed is an error', async () => {
  const reactor = await user('cy@example.com')
  const { data: made, error } = await reactor.connect.createConnection({ integration: 'keys', apiKey: 'k-123' })
  assert.equal(error, null)
  assert.equal(made.auth_mode, 'api_key')
  const { data: response } = await reactor.connect.proxy(made.id, 'things')
  assert.deepEqual(await response.json(), { path: '/api/things', auth: 'Bearer k-123' })

  let left
  const refused = await reactor.connect.connect('acme', { redirectTo: 'https://evil.test/', navigate: (u) => (left = u) })
  assert.equal(refused.error.code, 'redirect_not_allowed')
  assert.equal(left, undefined, 'no navigation on an error')
  const keyless = await reactor.connect.connect('keys', { navigate: (u) => (left = u) })
  assert.equal(keyless.error.code, 'no_browser_step')
})

// reactor.sites against a real `reactor dev` serving a site from its working tree (the list,
// page URLs that serve the files, no releases there), then against a real `reactor-server`
// that `reactor deploy` shipped a release to (the releases, the release's site).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient, MemoryStorage } from '@reactor/client'
import { startDev } from './dev.mjs'

const SITES = `
[[sites]]
name = "web"
source = "sites/web"
spa = true

[[sites]]
name = "docs"
source = "sites/docs"
`

let dev
before(async () => {
  dev = await startDev([], {
    manifest: SITES,
    files: {
      'sites/web/index.html': '<h1>app</h1>',
      'sites/docs/index.html': '<h1>docs</h1>',
      'sites/docs/a b/page.html': '<h1>spaced</h1>',
    },
  })
})
after(() => dev?.stop())

const client = (key) => createClient(dev.endpoint, key, { auth: { storage: new MemoryStorage() } })

test('list names the sites, where they come from and which is at /', async () => {
  const { data, error } = await client(dev.keys.public).sites.list()
  assert.equal(error, null)
  assert.equal(data.release, null, 'reactor dev serves the working tree, not a release')
  assert.equal(data.default, 'web')
  assert.deepEqual(data.sites.map((s) => [s.name, s.url, s.source, s.spa]), [
    ['web', '/sites/v1/web/', 'working tree', true],
    ['docs', '/sites/v1/docs/', 'working tree', false],
  ])
})

test('pageUrl() gives the page a browser loads, with no key needed', async () => {
  const sites = client(dev.keys.public).sites
  const page = await fetch(sites.pageUrl('docs', '/a b/page'))
  assert.equal(page.status, 200)
  assert.equal(await page.text(), '<h1>spaced</h1>')
  assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8')
  const route = await fetch(sites.pageUrl('web', '/todos/42'))
  assert.equal(await route.text(), '<h1>app</h1>', 'the SPA fallback')
  const root = await fetch(`${dev.endpoint}/`)
  assert.equal(await root.text(), '<h1>app</h1>', 'the default site at /')
})

test('releases: an error, not a throw, where the server keeps none', async () => {
  const { data, error } = await client(dev.keys.service).sites.releases()
  assert.equal(data, null)
  assert.equal(error.status, 404)
  const down = await createClient('http://127.0.0.1:1', 'rk_pub_x').sites.list()
  assert.equal(down.error.code, 'FETCH_ERROR')
})

test('releases on a reactor-server that was deployed to', async () => {
  const { execFileSync, spawn } = await import('node:child_process')
  const { mkdtempSync, mkdirSync, writeFileSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join, dirname } = await import('node:path')
  const { root } = await import('./dev.mjs')
  const bin = join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'debug')
  const dir = mkdtempSync(join(tmpdir(), 'reactor-sites-'))
  const env = { ...process.env, REACTOR_DATABASE_URL: `sqlite://${join(dir, 'server.db')}`, REACTOR_CACHE_DIR: join(dir, 'cache'), REACTOR_HOME: join(dir, 'home'), REACTOR_KEYCHAIN: 'off', REACTOR_LOG: 'warn' }
  const key = (tier) => execFileSync(join(bin, 'reactor-server'), ['keys', 'create', '--tier', tier, '--name', 'sdk'], { env }).toString().trim()
  const service = key('svc')
  const publicKey = key('pub')
  const port = 20000 + Math.floor(Math.random() * 20000)
  const server = spawn(join(bin, 'reactor-server'), [], { env: { ...env, REACTOR_LISTEN: `127.0.0.1:${port}` }, stdio: 'ignore' })
  try {
    const endpoint = `http://127.0.0.1:${port}`
    for (let i = 0; i < 300; i++) {
      try {
        if ((await fetch(`${endpoint}/healthz`)).ok) break
      } catch {}
      await new Promise((r) => setTimeout(r, 100))
    }
    const project = join(dir, 'project')
    for (const [file, text] of Object.entries({
      'reactor.toml': 'project_id = "sdk-sites"\nname = "sites"\n\n[[sites]]\nname = "web"\nsource = "sites/web"\n',
      'sites/web/index.html': '<h1>released</h1>',
    })) {
      mkdirSync(dirname(join(project, file)), { recursive: true })
      writeFileSync(join(project, file), text)
    }
    execFileSync(join(bin, 'reactor'), ['context', 'add', 'srv', '--endpoint', endpoint], { cwd: project, env })
    execFileSync(join(bin, 'reactor'), ['deploy', '--context', 'srv'], { cwd: project, env: { ...env, REACTOR_TOKEN: service } })

    const admin = createClient(endpoint, service).sites
    const { data: releases, error } = await admin.releases()
    assert.equal(error, null)
    assert.equal(releases.length, 1)
    assert.equal(releases[0].active, true)
    assert.equal(releases[0].status, 'ready')
    const { data: listed } = await admin.list()
    assert.equal(listed.release, releases[0].id)
    assert.deepEqual(listed.sites.map((s) => [s.name, s.source, s.files]), [['web', 'release', 1]])
    assert.equal(await (await fetch(admin.pageUrl('web'))).text(), '<h1>released</h1>')
    // A browser's key sees the sites but not the releases.
    const refused = await createClient(endpoint, publicKey).sites.releases()
    assert.equal(refused.error.status, 403)
    assert.equal(refused.error.code, 'not_admin')
  } finally {
    server.kill('SIGINT')
  }
})

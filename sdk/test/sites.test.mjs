// reactor.sites against a real `reactor dev` serving a site from its working tree: the list,
// page URLs that serve the files, and releases refused where there are none to show.
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

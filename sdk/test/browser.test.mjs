// examples/todo's page in a real browser (headless Chromium): served from another origin than
// the API (so CORS is exercised), using the built SDK through its import map. A self-test
// script, injected by this test's server, drives the page's own forms and reports what the
// page showed; a second user checks, through the SDK, that row-level security hid it.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { spawn, execFileSync } from 'node:child_process'
import { readFileSync, existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, normalize, extname } from 'node:path'
import { startDev, root } from './dev.mjs'

const chromium = process.env.CHROMIUM ?? 'chromium'

const SELFTEST = `
const ready = () => new Promise((r) => (window.reactorApp ? r() : addEventListener('reactor-app-ready', r, { once: true })))
const until = async (test, what) => {
  for (let i = 0; i < 200; i++) { if (test()) return; await new Promise((r) => setTimeout(r, 50)) }
  throw new Error('timed out waiting for ' + what + '; error shown: ' + document.getElementById('error').textContent)
}
const submit = (formId, values, button) => {
  const form = document.getElementById(formId)
  for (const [name, value] of Object.entries(values)) form.elements[name].value = value
  form.requestSubmit(button ? form.querySelector('button[value="' + button + '"]') : undefined)
}
const report = (body) => fetch('/__result', { method: 'POST', body: JSON.stringify(body) })
try {
  await ready()
  submit('auth-form', { email: 'browser@example.com', password: 'correct horse battery' }, 'up')
  await until(() => !document.getElementById('signed-in').hidden, 'sign-up')
  submit('org-form', { name: 'Browser Org' })
  await until(() => document.getElementById('org').textContent === 'Browser Org', 'the org')
  submit('todo-form', { title: 'written in a browser' })
  await until(() => document.querySelectorAll('#todos li').length === 1, 'the todo')
  document.querySelector('#todos input[type=checkbox]').click()
  await until(() => document.querySelector('#todos li.done'), 'the todo done')
  await report({
    who: document.getElementById('who').textContent,
    org: document.getElementById('org').textContent,
    todos: [...document.querySelectorAll('#todos li')].map((li) => ({ title: li.textContent.trim(), done: li.className === 'done' })),
    corsOrigin: location.origin,
  })
} catch (e) {
  await report({ error: String(e && e.message || e) })
}
`

let dev
let site
let siteUrl
let result
let gotResult

before(async () => {
  assert.ok(
    existsSync(join(root, 'sdk/packages/client/dist/index.js')),
    'build the SDK first (npm run build in sdk/)',
  )
  dev = await startDev(['examples/todo/data/migrations/0001_init.sql', 'examples/todo/data/migrations/0002_lists.sql'])
  gotResult = new Promise((resolve) => {
    site = createServer((req, res) => {
      const url = new URL(req.url, 'http://x')
      if (req.method === 'POST' && url.pathname === '/__result') {
        let body = ''
        req.on('data', (c) => (body += c))
        req.on('end', () => {
          res.end('ok')
          resolve(JSON.parse(body))
        })
        return
      }
      if (url.pathname === '/__selftest.js') {
        res.writeHead(200, { 'content-type': 'text/javascript' })
        return res.end(SELFTEST)
      }
      // /sdk/<package>/… from the built packages; everything else from sites/web.
      const sdk = url.pathname.match(/^\/sdk\/(client|auth|data|functions|storage|jobs|sites|ai|connect)\/(.+)$/)
      const base = sdk ? join(root, 'sdk/packages', sdk[1], 'dist') : join(root, 'examples/todo/sites/web')
      const file = normalize(join(base, sdk ? sdk[2] : url.pathname === '/' ? 'index.html' : url.pathname))
      if (!file.startsWith(base) || !existsSync(file)) {
        res.writeHead(404)
        return res.end()
      }
      let body = readFileSync(file)
      if (file.endsWith('index.html')) {
        body = body.toString().replace('</body>', '<script type="module" src="/__selftest.js"></script></body>')
      }
      const types = { '.html': 'text/html', '.js': 'text/javascript', '.map': 'application/json' }
      res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' })
      res.end(body)
    })
  })
  await new Promise((r) => site.listen(0, '127.0.0.1', r))
  siteUrl = `http://127.0.0.1:${site.address().port}`
})

after(() => {
  dev?.stop()
  site?.close()
})

test('the example page signs up, makes an org and keeps todos, in Chromium', { timeout: 90_000 }, async () => {
  try {
    execFileSync(chromium, ['--version'], { stdio: 'ignore' })
  } catch {
    assert.fail(`Chromium is needed for this test (apt-get install chromium): ${chromium}`)
  }
  const page = `${siteUrl}/index.html?endpoint=${encodeURIComponent(dev.endpoint)}&key=${dev.keys.public}`
  const browser = spawn(chromium, [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-dev-shm-usage',
    `--user-data-dir=${mkdtempSync(join(tmpdir(), 'reactor-chromium-'))}`, page,
  ], { stdio: 'ignore' })
  let timer
  try {
    result = await Promise.race([
      gotResult,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('the page reported nothing in 60 s')), 60_000)
      }),
    ])
  } finally {
    clearTimeout(timer)
    browser.kill('SIGKILL')
  }
  assert.equal(result.error, undefined, result.error)
  assert.equal(result.who, 'browser@example.com')
  assert.equal(result.org, 'Browser Org')
  assert.deepEqual(result.todos, [{ title: 'written in a browser', done: true }])
  assert.notEqual(result.corsOrigin, new URL(dev.endpoint).origin)

  // What the browser wrote is the browser user's org's alone.
  const { createClient, MemoryStorage } = await import('@reactor/client')
  const other = createClient(dev.endpoint, dev.keys.public, { auth: { storage: new MemoryStorage() } })
  await other.auth.signUp({ email: 'other@example.com', password: 'correct horse battery' })
  assert.deepEqual((await other.from('todos').select('title')).data, [])
  const service = createClient(dev.endpoint, dev.keys.service)
  assert.deepEqual((await service.from('todos').select('title, done')).data, [{ title: 'written in a browser', done: true }])
})

// `npm pack` makes installable packages: every package's tarball, installed into an empty project
// with no registry involved, import and compose.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { root } from './dev.mjs'

test('npm pack gives tarballs that install and import', { timeout: 120_000 }, () => {
  const packs = mkdtempSync(join(tmpdir(), 'reactor-packs-'))
  for (const name of ['data', 'auth', 'functions', 'storage', 'jobs', 'sites', 'ai', 'connect', 'client']) {
    execFileSync('npm', ['pack', '--silent', '--pack-destination', packs], {
      cwd: join(root, 'sdk/packages', name),
      stdio: 'ignore',
    })
  }
  const tarballs = readdirSync(packs).sort()
  assert.deepEqual(tarballs, ['reactor-ai-0.1.0.tgz', 'reactor-auth-0.1.0.tgz', 'reactor-client-0.1.0.tgz', 'reactor-connect-0.1.0.tgz', 'reactor-data-0.1.0.tgz', 'reactor-functions-0.1.0.tgz', 'reactor-jobs-0.1.0.tgz', 'reactor-sites-0.1.0.tgz', 'reactor-storage-0.1.0.tgz'])
  const app = mkdtempSync(join(tmpdir(), 'reactor-consumer-'))
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--offline', ...tarballs.map((t) => join(packs, t))], {
    cwd: app,
    stdio: 'ignore',
  })
  writeFileSync(
    join(app, 'check.mjs'),
    `import { createClient } from '@reactor/client'
     const reactor = createClient('http://127.0.0.1:1', 'rk_pub_x')
     const { error } = await reactor.from('todos').select()
     const fn = await reactor.functions.invoke('hello')
     const st = await reactor.storage.from('avatars').list()
     const jb = await reactor.jobs.list()
     const si = await reactor.sites.list()
     const ai = await reactor.ai.models()
     const co = await reactor.connect.integrations()
     console.log(JSON.stringify({ from: typeof reactor.from, auth: typeof reactor.auth.signUp, code: error.code, fn: fn.error.code, st: st.error.code, jb: jb.error.code, si: si.error.code, ai: ai.error.code, co: co.error.code }))`,
  )
  const out = JSON.parse(execFileSync('node', ['check.mjs'], { cwd: app }).toString())
  assert.deepEqual(out, { from: 'function', auth: 'function', code: 'FETCH_ERROR', fn: 'FETCH_ERROR', st: 'FETCH_ERROR', jb: 'FETCH_ERROR', si: 'FETCH_ERROR', ai: 'FETCH_ERROR', co: 'FETCH_ERROR' })
})

// reactor.jobs against a real `reactor dev` running a real function: enqueue, wait, runs,
// events, cancel and retry, and the service key required.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient, MemoryStorage } from '@reactor/client'
import { startDev } from './dev.mjs'

const WORK = `export default async (req: Request): Promise<Response> => {
  const run = await req.json()
  console.log('working on', JSON.stringify(run.payload))
  if (run.payload && run.payload.fail) return new Response('no', { status: 500 })
  return new Response('ok')
}
`

const JOBS = `
[[jobs]]
name = "send"
function = "work"
trigger = { type = "queue" }
max_attempts = 2
backoff_ms = 50

[[jobs]]
name = "on-paid"
function = "work"
trigger = { type = "event", event = "invoice.paid" }
`

let dev
before(async () => {
  dev = await startDev([], { functions: { work: { 'index.ts': WORK } }, manifest: JOBS })
})
after(() => dev?.stop())

const admin = () => createClient(dev.endpoint, dev.keys.service, { auth: { storage: new MemoryStorage() } })

test('enqueue, wait for the end, read the run and its logs', async () => {
  const { jobs } = admin()
  const listed = await jobs.list()
  assert.equal(listed.error, null)
  assert.deepEqual(listed.data.map((j) => j.name), ['on-paid', 'send'])
  const { data: run, error } = await jobs.enqueue('send', { to: 'ada' })
  assert.equal(error, null)
  assert.equal(run.status, 'queued')
  const done = await jobs.wait(run.id, { timeoutMs: 20_000 })
  assert.equal(done.error, null)
  assert.equal(done.data.status, 'succeeded')
  assert.equal(done.data.attempts, 1)
  assert.ok(done.data.logs.some((l) => l.message.includes('"to":"ada"')), JSON.stringify(done.data.logs))
  const runs = await jobs.runs('send')
  assert.ok(runs.data.some((r) => r.id === run.id))
})

test('a failing run ends dead and can be retried; events run their jobs', async () => {
  const { jobs } = admin()
  const { data: run } = await jobs.enqueue('send', { fail: true })
  const dead = await jobs.wait(run.id, { timeoutMs: 20_000 })
  assert.equal(dead.data.status, 'dead')
  assert.equal(dead.data.attempts, 2)
  assert.match(dead.data.last_error, /500/)
  const again = await jobs.retry(run.id)
  assert.equal(again.error, null)
  const emitted = await jobs.emit('invoice.paid', { invoice: 'in_1' })
  assert.equal(emitted.error, null)
  assert.equal(emitted.data.length, 1)
  const paid = await jobs.wait(emitted.data[0].id, { timeoutMs: 20_000 })
  assert.equal(paid.data.status, 'succeeded')
  assert.deepEqual(paid.data.trigger, { type: 'event', event: 'invoice.paid' })
})

test('errors: unknown job, a finished run cancelled, and no service key', async () => {
  const { jobs } = admin()
  const missing = await jobs.enqueue('nope')
  assert.equal(missing.error.code, 'job_not_found')
  assert.equal(missing.error.status, 404)
  const { data: run } = await jobs.enqueue('send')
  await jobs.wait(run.id)
  const late = await jobs.cancel(run.id)
  assert.equal(late.error.code, 'run_state')
  const browser = createClient(dev.endpoint, dev.keys.public, { auth: { storage: new MemoryStorage() } })
  const refused = await browser.jobs.list()
  assert.equal(refused.error.code, 'not_admin')
})

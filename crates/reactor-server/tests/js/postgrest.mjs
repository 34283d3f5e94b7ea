// The unmodified @supabase/postgrest-js against a running Reactor server with the conformance
// fixture seeded (tests/data.rs starts both). Every check prints; any failure exits 1.
import assert from 'node:assert/strict'
import { PostgrestClient } from '@supabase/postgrest-js'

const url = process.env.REACTOR_DATA_URL
const key = process.env.REACTOR_PUBLIC_KEY
const client = new PostgrestClient(url, { headers: { apikey: key } })
const as = (token, org) =>
  new PostgrestClient(url, { headers: { apikey: key, Authorization: `Bearer ${token}`, 'x-reactor-org': org } })

let failed = 0
async function check(name, fn) {
  try {
    await fn()
    console.log(`ok   ${name}`)
  } catch (e) {
    failed++
    console.log(`FAIL ${name}: ${e.message}`)
  }
}
const ok = ({ data, error }) => {
  assert.equal(error, null, JSON.stringify(error))
  return data
}

await check('select, embed, filter, order', async () => {
  const data = ok(await client.from('books').select('id,title,author:authors(name)').eq('author_id', 1).order('id'))
  assert.deepEqual(data, [
    { id: 1, title: 'A Wizard of Earthsea', author: { name: 'Ursula' } },
    { id: 2, title: 'The Dispossessed', author: { name: 'Ursula' } },
  ])
})
await check('count and range', async () => {
  const res = await client.from('books').select('id', { count: 'exact' }).order('id').range(1, 2)
  assert.deepEqual(ok(res), [{ id: 2 }, { id: 3 }])
  assert.equal(res.count, 5)
})
await check('head count', async () => {
  const res = await client.from('books').select('*', { count: 'exact', head: true }).eq('published', true)
  assert.equal(res.error, null)
  assert.equal(res.count, 3)
})
await check('single', async () => {
  assert.deepEqual(ok(await client.from('authors').select('name').eq('id', 2).single()), { name: 'Stanisław' })
})
await check('maybeSingle of nothing', async () => {
  assert.equal(ok(await client.from('authors').select('name').eq('id', 99).maybeSingle()), null)
})
await check('single of many is an error', async () => {
  const { error } = await client.from('authors').select('name').single()
  assert.equal(error.code, 'PGRST116')
})
await check('in, or, not, is', async () => {
  assert.deepEqual(ok(await client.from('books').select('id').in('id', [1, 3, 9]).order('id')), [{ id: 1 }, { id: 3 }])
  assert.deepEqual(ok(await client.from('books').select('id').or('id.eq.1,pages.gt.300').order('id')), [{ id: 1 }, { id: 2 }])
  assert.deepEqual(ok(await client.from('books').select('id').not('author_id', 'is', null).gt('pages', 250).order('id')), [{ id: 2 }, { id: 4 }])
  assert.deepEqual(ok(await client.from('books').select('id').is('author_id', null)), [{ id: 5 }])
})
await check('match, ilike, contains, overlaps', async () => {
  assert.deepEqual(ok(await client.from('books').select('id').match({ id: 1, author_id: 1 })), [{ id: 1 }])
  assert.deepEqual(ok(await client.from('books').select('id').ilike('title', '%SOL%')), [{ id: 3 }])
  assert.deepEqual(ok(await client.from('books').select('id').contains('tags', ['classic']).order('id')), [{ id: 1 }, { id: 2 }])
  assert.deepEqual(ok(await client.from('books').select('id').overlaps('tags', ['fantasy', 'x']).order('id')), [{ id: 1 }])
})
await check('text search', async () => {
  assert.deepEqual(ok(await client.from('books').select('id').textSearch('title', 'wizard')), [{ id: 1 }])
  assert.deepEqual(ok(await client.from('books').select('id').textSearch('title', 'wizard earthsea', { type: 'plain' })), [{ id: 1 }])
})
await check('embedded filters', async () => {
  const data = ok(await client.from('authors').select('name, books!inner(id)').eq('books.published', false))
  assert.deepEqual(data, [{ name: 'Octavia', books: [{ id: 4 }] }])
})
await check('csv', async () => {
  const { data, error } = await client.from('readers').select('id,name').order('id').csv()
  assert.equal(error, null)
  assert.equal(data, 'id,name\n1,Ann\n2,Ben\n')
})
await check('rpc by POST and by GET', async () => {
  assert.equal(ok(await client.rpc('add_them', { a: 2, b: 3 })), 5)
  assert.deepEqual(ok(await client.rpc('books_by', { author: 2 }, { get: true }).select('id')), [{ id: 3 }])
})
await check('insert, update, upsert, delete', async () => {
  assert.deepEqual(ok(await client.from('readers').insert({ id: 50, name: 'Zed' }).select()), [{ id: 50, name: 'Zed' }])
  const { error } = await client.from('readers').insert({ id: 50, name: 'again' })
  assert.equal(error.code, '23505')
  assert.deepEqual(ok(await client.from('readers').update({ name: 'Zoe' }).eq('id', 50).select('name')), [{ name: 'Zoe' }])
  assert.deepEqual(ok(await client.from('readers').upsert({ id: 50, name: 'Zia' }).select('name')), [{ name: 'Zia' }])
  const { error: unfiltered } = await client.from('readers').delete()
  assert.equal(unfiltered.code, '21000')
  assert.deepEqual(ok(await client.from('readers').delete().eq('id', 50).select('id')), [{ id: 50 }])
})
await check('unknown table', async () => {
  const { error, status } = await client.from('bookz').select()
  assert.equal(status, 404)
  assert.equal(error.code, 'PGRST205')
  assert.match(error.hint, /books/)
})
await check('row-level security per user and org', async () => {
  const alice = as(process.env.ALICE_TOKEN, 'acme')
  const bob = as(process.env.BOB_TOKEN, 'globex')
  const mine = ok(await alice.from('todos').insert({ title: 'from js' }).select('id,title'))
  assert.equal(mine[0].title, 'from js')
  assert.deepEqual(ok(await bob.from('todos').select('id').eq('id', mine[0].id)), [])
  const { error } = await bob.from('todos').insert({ title: 'x', org_id: '00000000-0000-0000-0000-000000000000' })
  assert.equal(error.code, '42501')
  assert.deepEqual(ok(await alice.from('todos').delete().eq('id', mine[0].id).select('title')), [{ title: 'from js' }])
})

if (failed > 0) {
  console.log(`${failed} postgrest-js check(s) failed`)
  process.exit(1)
}
console.log('postgrest-js: all checks passed')

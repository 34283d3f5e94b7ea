// @reactor/client end to end: a real `reactor dev` (the binary cargo built) on an ephemeral
// port, a project with the examples/todo migrations and the library fixture, driven only
// through the SDK.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createClient, MemoryStorage } from '@reactor/client'
import { startDev } from './dev.mjs'

let dev
let endpoint
let keys

before(async () => {
  dev = await startDev([
    'examples/todo/data/migrations/0001_init.sql',
    'examples/todo/data/migrations/0002_lists.sql',
    'crates/reactor-server/tests/fixtures/library.sql',
  ])
  ;({ endpoint, keys } = dev)
  const admin = createClient(endpoint, keys.service)
  const seeded = await admin.from('authors').insert([
    { id: 1, name: 'Ursula', country: 'US' },
    { id: 2, name: 'Stanisław', country: 'PL' },
  ])
  assert.equal(seeded.error, null)
  const books = await admin.from('books').insert([
    { id: 1, title: 'A Wizard of Earthsea', author_id: 1, pages: 183, tags: ['fantasy', 'classic'], published: true },
    { id: 2, title: 'The Dispossessed', author_id: 1, pages: 387, tags: ['scifi', 'classic'], published: true },
    { id: 3, title: 'Solaris', author_id: 2, pages: 204, tags: ['scifi'], published: true },
    { id: 4, title: 'Draft', pages: null },
  ])
  assert.equal(books.error, null)
})

after(() => dev?.stop())

const client = () => createClient(endpoint, keys.public, { auth: { storage: new MemoryStorage() } })

test('select with embeds, filters, order and ranges', async () => {
  const reactor = client()
  const { data, error, status } = await reactor
    .from('books')
    .select('id, title, author:authors(name)')
    .eq('author_id', 1)
    .order('id', { ascending: false })
  assert.equal(error, null)
  assert.equal(status, 200)
  assert.deepEqual(data, [
    { id: 2, title: 'The Dispossessed', author: { name: 'Ursula' } },
    { id: 1, title: 'A Wizard of Earthsea', author: { name: 'Ursula' } },
  ])
  const page = await reactor.from('books').select('id', { count: 'exact' }).order('id').range(1, 2)
  assert.deepEqual(page.data, [{ id: 2 }, { id: 3 }])
  assert.equal(page.count, 4)
  const head = await reactor.from('books').select('*', { count: 'exact', head: true }).is('author_id', null)
  assert.equal(head.count, 1)
  assert.equal(head.data, null)
  const nested = await reactor
    .from('authors')
    .select('name, books(id)')
    .order('id')
    .order('id', { ascending: false, referencedTable: 'books' })
    .limit(1, { referencedTable: 'books' })
  assert.deepEqual(nested.data, [
    { name: 'Ursula', books: [{ id: 2 }] },
    { name: 'Stanisław', books: [{ id: 3 }] },
  ])
})

test('every filter family', async () => {
  const reactor = client()
  const ids = async (q) => {
    const { data, error } = await q.order('id')
    assert.equal(error, null, JSON.stringify(error))
    return data.map((r) => r.id)
  }
  const books = () => reactor.from('books').select('id')
  assert.deepEqual(await ids(books().neq('author_id', 1)), [3])
  assert.deepEqual(await ids(books().gt('pages', 200).lte('pages', 387)), [2, 3])
  assert.deepEqual(await ids(books().like('title', '%olar%')), [3])
  assert.deepEqual(await ids(books().ilike('title', 'the%')), [2])
  assert.deepEqual(await ids(books().likeAnyOf('title', ['Sol%', 'Dra%'])), [3, 4])
  assert.deepEqual(await ids(books().regex('title', '^[ST]')), [2, 3])
  assert.deepEqual(await ids(books().in('id', [1, 3, 9])), [1, 3])
  assert.deepEqual(await ids(books().not('author_id', 'is', null)), [1, 2, 3])
  assert.deepEqual(await ids(books().isDistinct('author_id', 1)), [3, 4])
  assert.deepEqual(await ids(books().contains('tags', ['classic'])), [1, 2])
  assert.deepEqual(await ids(books().containedBy('tags', ['scifi', 'classic'])), [2, 3])
  assert.deepEqual(await ids(books().overlaps('tags', ['fantasy', 'x'])), [1])
  assert.deepEqual(await ids(books().textSearch('title', 'wizard')), [1])
  assert.deepEqual(await ids(books().textSearch('title', 'wizard earthsea', { type: 'plain' })), [1])
  assert.deepEqual(await ids(books().or('id.eq.1,pages.gt.300')), [1, 2])
  assert.deepEqual(await ids(books().match({ author_id: 1, pages: 183 })), [1])
  assert.deepEqual(await ids(books().filter('pages', 'lt', 200)), [1])
})

test('single, maybeSingle, csv and errors that never throw', async () => {
  const reactor = client()
  const one = await reactor.from('authors').select('name').eq('id', 2).single()
  assert.deepEqual(one.data, { name: 'Stanisław' })
  const none = await reactor.from('authors').select('name').eq('id', 99).maybeSingle()
  assert.deepEqual([none.data, none.error], [null, null])
  const many = await reactor.from('authors').select('name').single()
  assert.equal(many.error.code, 'PGRST116')
  assert.equal(many.error.status, 406)
  const csv = await reactor.from('authors').select('id,name').order('id').csv()
  assert.equal(csv.data, 'id,name\n1,Ursula\n2,Stanisław\n')
  const missing = await reactor.from('bookz').select()
  assert.equal(missing.data, null)
  assert.equal(missing.error.code, 'PGRST205')
  assert.equal(missing.error.status, 404)
  assert.match(missing.error.hint, /books/)
  const unreachable = await createClient('http://127.0.0.1:9', keys.public).from('books').select()
  assert.equal(unreachable.error.code, 'FETCH_ERROR')
})

test('writes: insert, upsert, update, delete, returning', async () => {
  const reactor = client()
  const inserted = await reactor.from('readers').insert({ id: 10, name: 'Zed' }).select()
  assert.deepEqual(inserted.data, [{ id: 10, name: 'Zed' }])
  assert.equal(inserted.status, 201)
  const dup = await reactor.from('readers').insert({ id: 10, name: 'again' })
  assert.equal(dup.error.code, '23505')
  assert.equal(dup.error.status, 409)
  const up = await reactor.from('readers').upsert([{ id: 10, name: 'Zoe' }, { id: 11, name: 'Yan' }]).select('name')
  assert.deepEqual(up.data, [{ name: 'Zoe' }, { name: 'Yan' }])
  const skipped = await reactor.from('readers').upsert({ id: 11, name: 'ignored' }, { ignoreDuplicates: true }).select()
  assert.deepEqual(skipped.data, [])
  const updated = await reactor.from('readers').update({ name: 'Zia' }).eq('id', 10).select('name').single()
  assert.deepEqual(updated.data, { name: 'Zia' })
  const unfiltered = await reactor.from('readers').delete()
  assert.equal(unfiltered.error.code, '21000')
  const deleted = await reactor.from('readers').delete().in('id', [10, 11]).select('id')
  assert.deepEqual(deleted.data, [{ id: 10 }, { id: 11 }])
})

test('rpc by POST and GET', async () => {
  const reactor = client()
  assert.deepEqual((await reactor.rpc('add_them', { a: 2, b: 40 })).data, 42)
  const rows = await reactor.rpc('books_by', { author: 1 }, { get: true }).select('id').order('id')
  assert.deepEqual(rows.data, [{ id: 1 }, { id: 2 }])
  const one = await reactor.rpc('book_by_id', { book_id: 3 }).select('title')
  assert.deepEqual(one.data, { title: 'Solaris' })
})

test('auth and organizations, with row-level security between them', async () => {
  const alice = client()
  const bob = client()
  const events = []
  alice.auth.onAuthStateChange((event) => events.push(event))
  const signed = await alice.auth.signUp({ email: 'alice@example.com', password: 'correct horse battery', options: { data: { plan: 'pro' } } })
  assert.equal(signed.error, null)
  assert.ok(signed.data.session.access_token)
  assert.equal((await bob.auth.signUp({ email: 'bob@example.com', password: 'correct horse battery' })).error, null)
  assert.equal((await alice.auth.orgs.create({ name: 'Acme', slug: 'acme' })).error, null)
  assert.equal((await bob.auth.orgs.create({ name: 'Globex', slug: 'globex' })).error, null)
  assert.equal((await alice.auth.orgs.switch('acme')).error, null)
  assert.equal((await bob.auth.orgs.switch('globex')).error, null)
  assert.deepEqual(events, ['SIGNED_IN', 'ORG_SWITCHED'])
  const orgs = await alice.auth.orgs.list()
  assert.deepEqual(orgs.data.map((o) => o.slug), ['acme'])

  const mine = await alice.from('todos').insert({ title: 'ship the SDK' }).select('id, title, done').single()
  assert.equal(mine.error, null, JSON.stringify(mine.error))
  assert.equal(mine.data.title, 'ship the SDK')
  await bob.from('todos').insert({ title: 'globex plan' })
  assert.deepEqual((await alice.from('todos').select('title')).data, [{ title: 'ship the SDK' }])
  assert.deepEqual((await bob.from('todos').select('title')).data, [{ title: 'globex plan' }])
  const sneaky = await bob.from('todos').update({ title: 'hacked' }).eq('id', mine.data.id).select()
  assert.deepEqual(sneaky.data, [])
  const intruder = await bob.from('todos').insert({ title: 'x', org_id: '00000000-0000-0000-0000-000000000000' })
  assert.equal(intruder.error.code, '42501')
  assert.equal(intruder.error.status, 403)
  const anonymous = await client().from('todos').select('title')
  assert.deepEqual(anonymous.data, [])

  const user = await alice.auth.getUser()
  assert.equal(user.data.user.email, 'alice@example.com')
  const renamed = await alice.auth.updateUser({ data: { plan: 'team' } })
  assert.equal(renamed.error, null)
  assert.equal(renamed.data.user.user_metadata.plan, 'team')
  assert.equal((await alice.auth.signOut()).error, null)
  assert.equal((await alice.auth.getUser()).error.code, 'no_session')
  assert.deepEqual((await alice.from('todos').select('title')).data, [])
  const back = await alice.auth.signInWithPassword({ email: 'alice@example.com', password: 'correct horse battery' })
  assert.equal(back.error, null)
  const wrong = await alice.auth.signInWithPassword({ email: 'alice@example.com', password: 'nope nope nope' })
  assert.equal(wrong.error.status, 400)
})

test('one refresh in flight, however many callers wait', async () => {
  let refreshes = 0
  const counting = (url, init) => {
    if (url.includes('grant_type=refresh_token')) refreshes++
    return fetch(url, init)
  }
  const reactor = createClient(endpoint, keys.public, { auth: { storage: new MemoryStorage() }, fetch: counting })
  const { error } = await reactor.auth.signUp({ email: 'carol@example.com', password: 'correct horse battery' })
  assert.equal(error, null)
  const sessions = await Promise.all([1, 2, 3, 4].map(() => reactor.auth.refreshSession()))
  assert.equal(refreshes, 1)
  const tokens = new Set(sessions.map((s) => s.data.session.access_token))
  assert.equal(tokens.size, 1)
  // The session persists in the storage given.
  const storage = new MemoryStorage()
  const first = createClient(endpoint, keys.public, { auth: { storage } })
  await first.auth.signInWithPassword({ email: 'carol@example.com', password: 'correct horse battery' })
  const second = createClient(endpoint, keys.public, { auth: { storage } })
  assert.equal((await second.auth.getUser()).data.user.email, 'carol@example.com')
})

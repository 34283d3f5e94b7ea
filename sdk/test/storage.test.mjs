// reactor.storage against a real `reactor dev`: buckets, uploads (plain and resumable with
// progress), downloads, listing, signed and public URLs, and a user's objects under the
// default policies.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { createClient, MemoryStorage } from '@reactor/client'
import { startDev } from './dev.mjs'

let dev
before(async () => {
  dev = await startDev([])
})
after(() => dev?.stop())

const admin = () => createClient(dev.endpoint, dev.keys.service, { auth: { storage: new MemoryStorage() } })
const anon = () => createClient(dev.endpoint, dev.keys.public, { auth: { storage: new MemoryStorage() } })
const sha = (bytes) => createHash('sha256').update(bytes).digest('hex')

test('buckets: create, read, update, refuse a duplicate, delete when empty', async () => {
  const { storage } = admin()
  assert.equal((await storage.createBucket('sdk-files', { fileSizeLimit: '1MB', allowedMimeTypes: ['text/*'] })).error, null)
  const again = await storage.createBucket('sdk-files')
  assert.equal(again.error?.code, 'bucket_exists')
  assert.equal(again.error?.status, 409)
  const bucket = await storage.getBucket('sdk-files')
  assert.equal(bucket.data?.file_size_limit, 1024 * 1024)
  assert.equal((await storage.updateBucket('sdk-files', { public: true })).error, null)
  assert.equal((await storage.getBucket('sdk-files')).data?.public, true)
  const listed = await storage.listBuckets()
  assert.ok(listed.data?.some((b) => b.id === 'sdk-files'))
  const user = anon()
  const refused = await user.storage.createBucket('mine')
  assert.equal(refused.error?.code, 'not_admin')
  assert.equal((await storage.deleteBucket('sdk-files')).error, null)
})

test('objects: upload, download, info, list, move, copy, remove, signed and public URLs', async () => {
  const { storage } = admin()
  await storage.createBucket('sdk-docs', { public: true })
  const docs = storage.from('sdk-docs')
  const put = await docs.upload('notes/hello.txt', 'hello, storage', { contentType: 'text/plain', metadata: { lang: 'en' } })
  assert.equal(put.error, null)
  assert.deepEqual(put.data, { path: 'notes/hello.txt', fullPath: 'sdk-docs/notes/hello.txt' })
  const dup = await docs.upload('notes/hello.txt', 'again')
  assert.equal(dup.error?.code, 'object_exists')
  // Replacing replaces the metadata too.
  assert.equal((await docs.upload('notes/hello.txt', 'hello again', { upsert: true, contentType: 'text/plain', metadata: { lang: 'en-GB' } })).error, null)
  const got = await docs.download('notes/hello.txt')
  assert.equal(await got.data?.text(), 'hello again')
  assert.equal(got.data?.type, 'text/plain')
  const part = await docs.download('notes/hello.txt', { range: [6, 10] })
  assert.equal(await part.data?.text(), 'again')
  const info = await docs.info('notes/hello.txt')
  assert.equal(info.data?.size, 11)
  assert.deepEqual(info.data?.metadata, { lang: 'en-GB' })
  assert.equal((await docs.exists('notes/hello.txt')).data, true)
  assert.equal((await docs.exists('notes/none.txt')).data, false)
  await docs.upload('notes/deep/x.bin', new Uint8Array([1, 2, 3]))
  const listed = await docs.list('notes')
  assert.deepEqual(listed.data?.map((e) => e.name), ['deep', 'hello.txt'])
  assert.equal((await docs.move('notes/hello.txt', 'moved/hello.txt')).error, null)
  assert.equal((await docs.copy('moved/hello.txt', 'copied/hello.txt')).error, null)
  const signed = await docs.createSignedUrl('moved/hello.txt', 60, { download: 'greeting.txt' })
  const res = await fetch(signed.data.signedUrl)
  assert.equal(res.status, 200)
  assert.equal(await res.text(), 'hello again')
  assert.match(res.headers.get('content-disposition') ?? '', /greeting\.txt/)
  const many = await docs.createSignedUrls(['moved/hello.txt', 'nope.txt'], 60)
  assert.ok(many.data?.[0]?.signedUrl)
  assert.ok(many.data?.[1]?.error)
  const pub = docs.getPublicUrl('copied/hello.txt')
  assert.equal(await (await fetch(pub.data.publicUrl)).text(), 'hello again')
  const upload = await docs.createSignedUploadUrl('dropped/in.txt')
  assert.equal(upload.error, null)
  const dropped = await anon().storage.from('sdk-docs').uploadToSignedUrl('dropped/in.txt', upload.data.token, 'dropped in', { contentType: 'text/plain' })
  assert.equal(dropped.error, null, JSON.stringify(dropped.error))
  assert.equal(await (await docs.download('dropped/in.txt')).data?.text(), 'dropped in')
  const removed = await docs.remove(['moved/hello.txt', 'copied/hello.txt', 'nope.txt'])
  assert.equal(removed.data?.length, 2)
  const gone = await docs.download('moved/hello.txt')
  assert.equal(gone.error?.status, 404)
  assert.equal(gone.error?.code, 'object_not_found')
})

test('a resumable upload reports progress chunk by chunk and arrives whole', async () => {
  const { storage } = admin()
  await storage.createBucket('sdk-big')
  const bytes = new Uint8Array(2_500_000)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31) % 256
  const seen = []
  const up = await storage.from('sdk-big').upload('big.bin', bytes, {
    chunkSize: 1024 * 1024,
    onProgress: (sent, total) => seen.push([sent, total]),
  })
  assert.equal(up.error, null, JSON.stringify(up.error))
  assert.deepEqual(seen, [[0, 2_500_000], [1_048_576, 2_500_000], [2_097_152, 2_500_000], [2_500_000, 2_500_000]])
  const back = new Uint8Array(await (await storage.from('sdk-big').download('big.bin')).data.arrayBuffer())
  assert.equal(sha(back), sha(bytes))
  const tooBig = await storage.updateBucket('sdk-big', { fileSizeLimit: 1000 })
  assert.equal(tooBig.error, null)
  const refused = await storage.from('sdk-big').upload('huge.bin', bytes, { onProgress: () => {} })
  assert.equal(refused.error?.code, 'payload_too_large', 'refused when the upload is created')
})

test("a signed-in user keeps their own objects; others' stay hidden", async () => {
  const { storage } = admin()
  await storage.createBucket('sdk-homes')
  const ada = anon()
  assert.equal((await ada.auth.signUp({ email: 'ada-storage@example.com', password: 'correct horse battery' })).error, null)
  const bo = anon()
  assert.equal((await bo.auth.signUp({ email: 'bo-storage@example.com', password: 'correct horse battery' })).error, null)
  assert.equal((await ada.storage.from('sdk-homes').upload('ada/diary.txt', 'dear diary', { contentType: 'text/plain' })).error, null)
  assert.equal(await (await ada.storage.from('sdk-homes').download('ada/diary.txt')).data?.text(), 'dear diary')
  const peek = await bo.storage.from('sdk-homes').download('ada/diary.txt')
  assert.equal(peek.error?.status, 404)
  const list = await bo.storage.from('sdk-homes').list('ada')
  assert.deepEqual(list.data, [])
  const nobody = await anon().storage.from('sdk-homes').upload('anon.txt', 'x')
  assert.equal(nobody.error?.status, 403, 'no policy lets the anonymous role write')
})

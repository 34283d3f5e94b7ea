// The unmodified @supabase/storage-js and tus-js-client against a running Reactor server
// (tests/storage.rs starts it). Every check prints; any failure exits 1.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { StorageClient } from '@supabase/storage-js'
import * as tus from 'tus-js-client'

const url = process.env.REACTOR_STORAGE_URL
const service = process.env.REACTOR_SERVICE_KEY
const publicKey = process.env.REACTOR_PUBLIC_KEY
const token = process.env.REACTOR_USER_TOKEN
const admin = new StorageClient(url, { apikey: service, Authorization: `Bearer ${service}` })
const user = new StorageClient(url, { apikey: publicKey, Authorization: `Bearer ${token}` })

let failed = 0
async function check(name, fn) {
  try {
    await fn()
    console.log(`ok   ${name}`)
  } catch (e) {
    failed++
    console.log(`FAIL ${name}: ${e.stack ?? e.message}`)
  }
}
const ok = ({ data, error }) => {
  assert.equal(error, null, JSON.stringify(error))
  return data
}
const sha = (bytes) => createHash('sha256').update(bytes).digest('hex')

await check('buckets: create, get, update, list', async () => {
  ok(await admin.createBucket('js-files', { public: false, fileSizeLimit: '2MB', allowedMimeTypes: ['text/*', 'image/png', 'application/octet-stream'] }))
  ok(await admin.createBucket('js-public', { public: true }))
  const bucket = ok(await admin.getBucket('js-files'))
  assert.equal(bucket.public, false)
  assert.equal(bucket.file_size_limit, 2 * 1024 * 1024)
  ok(await admin.updateBucket('js-files', { public: false, fileSizeLimit: 3 * 1024 * 1024 }))
  assert.equal(ok(await admin.getBucket('js-files')).file_size_limit, 3 * 1024 * 1024)
  const names = ok(await admin.listBuckets()).map((b) => b.name)
  assert.ok(names.includes('js-files') && names.includes('js-public'), names.join())
  const { error } = await admin.createBucket('js-files')
  assert.equal(error?.status, 409, JSON.stringify(error))
})

const files = admin.from('js-files')
await check('upload bytes and a Blob (multipart), download, info', async () => {
  const data = ok(await files.upload('notes/a.txt', Buffer.from('alpha'), { contentType: 'text/plain' }))
  assert.equal(data.path, 'notes/a.txt')
  ok(await files.upload('notes/b.txt', new Blob(['bravo'], { type: 'text/plain' }), { cacheControl: '60', metadata: { lang: 'en' } }))
  assert.equal(await ok(await files.download('notes/a.txt')).text(), 'alpha')
  const blob = ok(await files.download('notes/b.txt'))
  assert.equal(await blob.text(), 'bravo')
  assert.equal(blob.type, 'text/plain')
  const info = ok(await files.info('notes/b.txt'))
  assert.equal(info.size, 5)
  assert.deepEqual(info.metadata, { lang: 'en' })
  assert.equal(info.cacheControl ?? info.cache_control, 'max-age=60')
  assert.equal(ok(await files.exists('notes/b.txt')), true)
})

await check('upsert and update replace; a duplicate without upsert is refused', async () => {
  const { error } = await files.upload('notes/a.txt', Buffer.from('again'), { contentType: 'text/plain' })
  assert.ok(error, 'a duplicate upload fails')
  ok(await files.upload('notes/a.txt', Buffer.from('alpha 2'), { contentType: 'text/plain', upsert: true }))
  ok(await files.update('notes/a.txt', Buffer.from('alpha 3'), { contentType: 'text/plain' }))
  assert.equal(await ok(await files.download('notes/a.txt')).text(), 'alpha 3')
})

await check('list, move, copy, remove', async () => {
  ok(await files.upload('notes/deep/c.txt', Buffer.from('charlie'), { contentType: 'text/plain' }))
  const listed = ok(await files.list('notes', { sortBy: { column: 'name', order: 'asc' } }))
  assert.deepEqual(listed.map((e) => [e.name, e.id === null]), [['deep', true], ['a.txt', false], ['b.txt', false]])
  assert.equal(listed[1].metadata.size, 7)
  ok(await files.move('notes/b.txt', 'moved/b.txt'))
  ok(await files.copy('moved/b.txt', 'copied/b.txt'))
  assert.equal(await ok(await files.download('copied/b.txt')).text(), 'bravo')
  const removed = ok(await files.remove(['moved/b.txt', 'copied/b.txt', 'nothing.txt']))
  assert.equal(removed.length, 2)
  const { error } = await files.download('moved/b.txt')
  assert.ok(error, 'a removed object is gone')
})

await check('signed URLs: download and upload', async () => {
  const { signedUrl } = ok(await files.createSignedUrl('notes/a.txt', 60))
  const res = await fetch(signedUrl)
  assert.equal(res.status, 200)
  assert.equal(await res.text(), 'alpha 3')
  const many = ok(await files.createSignedUrls(['notes/a.txt', 'notes/deep/c.txt'], 60))
  assert.equal(await (await fetch(many[1].signedUrl)).text(), 'charlie')
  const { token: uploadToken, path } = ok(await files.createSignedUploadUrl('dropped/d.txt'))
  ok(await files.uploadToSignedUrl(path, uploadToken, Buffer.from('delta'), { contentType: 'text/plain' }))
  assert.equal(await ok(await files.download('dropped/d.txt')).text(), 'delta')
})

await check('public URLs', async () => {
  const pub = admin.from('js-public')
  ok(await pub.upload('logo.png', Buffer.from([0x89, 0x50, 0x4e, 0x47]), { contentType: 'image/png' }))
  const { publicUrl } = pub.getPublicUrl('logo.png').data
  const res = await fetch(publicUrl)
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-type'), 'image/png')
  const { publicUrl: privateUrl } = files.getPublicUrl('notes/a.txt').data
  assert.equal((await fetch(privateUrl)).status, 404)
})

await check("a user's own objects, under the default policies", async () => {
  const mine = user.from('js-files')
  ok(await mine.upload('user/own.txt', Buffer.from('mine'), { contentType: 'text/plain' }))
  assert.equal(await ok(await mine.download('user/own.txt')).text(), 'mine')
  const { error } = await mine.download('notes/a.txt')
  assert.ok(error, "the service key's object is not the user's")
})

await check('tus-js-client: a resumable upload in 1 MiB chunks', async () => {
  const bytes = Buffer.alloc(2_500_000)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) % 256
  await new Promise((resolve, reject) => {
    const upload = new tus.Upload(bytes, {
      endpoint: `${url}/upload/resumable`,
      headers: { apikey: publicKey, authorization: `Bearer ${token}`, 'x-upsert': 'true' },
      chunkSize: 1024 * 1024,
      retryDelays: [0],
      metadata: { bucketName: 'js-files', objectName: 'user/big.bin', contentType: 'application/octet-stream' },
      onError: reject,
      onSuccess: resolve,
    })
    upload.start()
  })
  const blob = ok(await user.from('js-files').download('user/big.bin'))
  const got = Buffer.from(await blob.arrayBuffer())
  assert.equal(got.length, bytes.length)
  assert.equal(sha(got), sha(bytes))
})

await check('empty and delete buckets', async () => {
  const { error } = await admin.deleteBucket('js-public')
  assert.ok(error, 'a bucket holding objects is not deleted')
  ok(await admin.emptyBucket('js-public'))
  ok(await admin.deleteBucket('js-public'))
  const { error: gone } = await admin.getBucket('js-public')
  assert.ok(gone)
})

if (failed) {
  console.log(`${failed} storage-js check(s) failed`)
  process.exit(1)
}

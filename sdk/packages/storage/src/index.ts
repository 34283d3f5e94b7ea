/**
 * @reactor/storage: buckets and objects on `/storage/v1`.
 *
 * ```ts
 * const avatars = reactor.storage.from('avatars')
 * await avatars.upload(`${user.id}/photo.png`, file, { contentType: 'image/png', upsert: true })
 * await avatars.upload('talk.mp4', bigFile, { onProgress: (sent, total) => bar.update(sent / total) })
 * const { data: blob } = await avatars.download(`${user.id}/photo.png`)
 * const { data } = await avatars.createSignedUrl(`${user.id}/photo.png`, 600)
 * ```
 *
 * Every call resolves to `{ data, error }` and never throws on an API error; `error` carries
 * the server's `code`, `message`, `details`, `hint` and the HTTP `status`. Uploads given an
 * `onProgress`, or larger than one chunk, go through the resumable protocol (TUS 1.0): sent
 * chunk by chunk, reporting progress after each, and resumed from the server's offset after a
 * dropped connection.
 */

export interface StorageError {
  code: string
  message: string
  details: string | null
  hint: string | null
  status: number
}

export interface Result<T> {
  data: T | null
  error: StorageError | null
}

export interface Bucket {
  id: string
  name: string
  owner: string | null
  public: boolean
  file_size_limit: number | null
  allowed_mime_types: string[] | null
  org_id: string | null
  created_at: string
  updated_at: string
}

export interface BucketOptions {
  public?: boolean
  /** Bytes, or a size such as `'10MB'`; `null` clears it. */
  fileSizeLimit?: number | string | null
  /** `image/png`, `image/*`…; `null` clears it. */
  allowedMimeTypes?: string[] | null
  /** The organization whose members share the bucket (on create). */
  orgId?: string
}

export interface FileObject {
  name: string
  /** `null` for a folder. */
  id: string | null
  updated_at: string | null
  created_at: string | null
  last_accessed_at: string | null
  metadata: { size: number; mimetype: string; eTag: string; cacheControl: string; lastModified: string } | null
}

export interface ObjectInfo {
  id: string
  bucket_id: string
  name: string
  owner_id: string | null
  org_id: string | null
  size: number
  mime_type: string
  sha256: string
  metadata: Record<string, unknown>
  cache_control: string | null
  created_at: string
  updated_at: string
  etag: string
}

export interface UploadOptions {
  /** [default: from the path's extension] */
  contentType?: string
  /** Seconds (`'3600'`) or a whole Cache-Control value. */
  cacheControl?: string
  /** Replace an object already at the path. */
  upsert?: boolean
  /** Your own metadata, kept with the object. */
  metadata?: Record<string, unknown>
  /** Called with the bytes the server holds and the total; makes the upload resumable. */
  onProgress?: (sent: number, total: number) => void
  /** Chunk size of a resumable upload [default: 6 MiB]. */
  chunkSize?: number
  /** Attempts per chunk before giving up [default: 3]. */
  retries?: number
  signal?: AbortSignal
}

export interface ListOptions {
  limit?: number
  offset?: number
  sortBy?: { column: 'name' | 'created_at' | 'updated_at'; order: 'asc' | 'desc' }
  search?: string
}

export type UploadBody = Blob | ArrayBuffer | ArrayBufferView | string

/** How the SDK reaches the server: adds the project key, the user's token and the org. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>

const CHUNK = 6 * 1024 * 1024
const TUS = '1.0.0'

function failure(status: number, body: unknown): StorageError {
  const b = (body ?? {}) as Partial<StorageError>
  return {
    code: typeof b.code === 'string' ? b.code : `http_${status}`,
    message: typeof b.message === 'string' ? b.message : `the server answered ${status}`,
    details: b.details ?? null,
    hint: b.hint ?? null,
    status,
  }
}

function fetchError(e: unknown): StorageError {
  return { code: 'FETCH_ERROR', message: String(e instanceof Error ? e.message : e), details: null, hint: null, status: 0 }
}

/** Each segment encoded, the slashes kept. */
function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/')
}

function toBlob(body: UploadBody, type?: string): Blob {
  if (body instanceof Blob) return body
  if (typeof body === 'string') return new Blob([body], type ? { type } : {})
  const bytes = body instanceof ArrayBuffer ? new Uint8Array(body) : new Uint8Array(body.buffer, body.byteOffset, body.byteLength)
  return new Blob([bytes as BlobPart], type ? { type } : {})
}

class Requests {
  constructor(
    readonly url: string,
    readonly fetcher: Fetch,
  ) {}

  async json<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Result<T>> {
    let response: Response
    try {
      const init: RequestInit = { method, headers: { ...headers } }
      if (body !== undefined) {
        init.body = JSON.stringify(body)
        ;(init.headers as Record<string, string>)['content-type'] = 'application/json'
      }
      response = await this.fetcher(`${this.url}${path}`, init)
    } catch (e) {
      return { data: null, error: fetchError(e) }
    }
    const text = await response.text()
    let parsed: unknown = null
    try {
      parsed = text ? JSON.parse(text) : null
    } catch {
      parsed = text
    }
    if (!response.ok) return { data: null, error: failure(response.status, parsed) }
    return { data: parsed as T, error: null }
  }
}

export class StorageClient {
  private readonly requests: Requests

  constructor(url: string, fetcher: Fetch) {
    this.requests = new Requests(url.replace(/\/$/, ''), fetcher)
  }

  /** The buckets the caller can see (every one but other organizations'). */
  listBuckets(): Promise<Result<Bucket[]>> {
    return this.requests.json('GET', '/bucket')
  }

  getBucket(id: string): Promise<Result<Bucket>> {
    return this.requests.json('GET', `/bucket/${encodeURIComponent(id)}`)
  }

  /** Needs the service key. */
  createBucket(id: string, options: BucketOptions = {}): Promise<Result<{ name: string }>> {
    return this.requests.json('POST', '/bucket', {
      id,
      public: options.public ?? false,
      file_size_limit: options.fileSizeLimit ?? null,
      allowed_mime_types: options.allowedMimeTypes ?? null,
      org_id: options.orgId,
    })
  }

  /** Needs the service key; absent options stay as they are. */
  updateBucket(id: string, options: BucketOptions): Promise<Result<{ message: string }>> {
    const body: Record<string, unknown> = {}
    if (options.public !== undefined) body.public = options.public
    if (options.fileSizeLimit !== undefined) body.file_size_limit = options.fileSizeLimit
    if (options.allowedMimeTypes !== undefined) body.allowed_mime_types = options.allowedMimeTypes
    return this.requests.json('PUT', `/bucket/${encodeURIComponent(id)}`, body)
  }

  emptyBucket(id: string): Promise<Result<{ message: string }>> {
    return this.requests.json('POST', `/bucket/${encodeURIComponent(id)}/empty`)
  }

  /** A bucket holding objects is refused (`bucket_not_empty`) until emptied. */
  deleteBucket(id: string): Promise<Result<{ message: string }>> {
    return this.requests.json('DELETE', `/bucket/${encodeURIComponent(id)}`)
  }

  /** The objects of one bucket. */
  from(bucket: string): BucketApi {
    return new BucketApi(this.requests, bucket)
  }
}

export class BucketApi {
  constructor(
    private readonly requests: Requests,
    readonly bucket: string,
  ) {}

  private objectPath(path: string): string {
    return `/object/${encodeURIComponent(this.bucket)}/${encodePath(path)}`
  }

  /**
   * Stores `body` at `path`. With `onProgress`, or a body larger than one chunk, the upload is
   * resumable: chunk by chunk, progress after each, resumed after a dropped connection.
   */
  async upload(path: string, body: UploadBody, options: UploadOptions = {}): Promise<Result<{ path: string; fullPath: string }>> {
    const blob = toBlob(body, options.contentType)
    if (options.onProgress || blob.size > (options.chunkSize ?? CHUNK)) {
      return this.resumable(path, blob, options)
    }
    return this.send('POST', path, blob, options)
  }

  /** Replaces the object at `path`. */
  update(path: string, body: UploadBody, options: UploadOptions = {}): Promise<Result<{ path: string; fullPath: string }>> {
    return this.send('PUT', path, toBlob(body, options.contentType), options)
  }

  private async send(method: string, path: string, blob: Blob, options: UploadOptions): Promise<Result<{ path: string; fullPath: string }>> {
    const headers: Record<string, string> = { 'x-upsert': String(options.upsert ?? false) }
    const type = options.contentType ?? blob.type
    if (type) headers['content-type'] = type
    if (options.cacheControl) headers['cache-control'] = options.cacheControl
    if (options.metadata) headers['x-metadata'] = JSON.stringify(options.metadata)
    let response: Response
    try {
      response = await this.requests.fetcher(`${this.requests.url}${this.objectPath(path)}`, {
        method,
        headers,
        body: blob,
        signal: options.signal,
      })
    } catch (e) {
      return { data: null, error: fetchError(e) }
    }
    const answer = await response.json().catch(() => null)
    if (!response.ok) return { data: null, error: failure(response.status, answer) }
    return { data: { path, fullPath: (answer as { Key: string }).Key }, error: null }
  }

  /** The TUS 1.0 upload behind `upload` with progress. */
  private async resumable(path: string, blob: Blob, options: UploadOptions): Promise<Result<{ path: string; fullPath: string }>> {
    const b64 = (s: string) => btoa(String.fromCharCode(...new TextEncoder().encode(s)))
    const meta = [`bucketName ${b64(this.bucket)}`, `objectName ${b64(path)}`]
    const type = options.contentType ?? blob.type
    if (type) meta.push(`contentType ${b64(type)}`)
    if (options.cacheControl) meta.push(`cacheControl ${b64(options.cacheControl)}`)
    if (options.metadata) meta.push(`metadata ${b64(JSON.stringify(options.metadata))}`)
    const f = this.requests.fetcher
    const base = this.requests.url
    let location: string
    try {
      const created = await f(`${base}/upload/resumable`, {
        method: 'POST',
        headers: {
          'tus-resumable': TUS,
          'upload-length': String(blob.size),
          'upload-metadata': meta.join(','),
          'x-upsert': String(options.upsert ?? false),
        },
        signal: options.signal,
      })
      if (created.status !== 201) return { data: null, error: failure(created.status, await created.json().catch(() => null)) }
      const at = created.headers.get('location') ?? ''
      location = new URL(at, base).toString()
    } catch (e) {
      return { data: null, error: fetchError(e) }
    }
    const chunk = options.chunkSize ?? CHUNK
    const retries = options.retries ?? 3
    let offset = 0
    let failures = 0
    options.onProgress?.(0, blob.size)
    while (offset < blob.size) {
      try {
        const res = await f(location, {
          method: 'PATCH',
          headers: {
            'tus-resumable': TUS,
            'upload-offset': String(offset),
            'content-type': 'application/offset+octet-stream',
          },
          body: blob.slice(offset, Math.min(offset + chunk, blob.size)),
          signal: options.signal,
        })
        if (res.status === 409 || (res.status >= 500 && failures < retries)) {
          failures++
          offset = await this.offsetOf(location, options.signal)
          continue
        }
        if (res.status !== 204) return { data: null, error: failure(res.status, await res.json().catch(() => null)) }
        offset = Number(res.headers.get('upload-offset') ?? offset)
        failures = 0
        options.onProgress?.(offset, blob.size)
      } catch (e) {
        if (options.signal?.aborted || failures >= retries) return { data: null, error: fetchError(e) }
        failures++
        await new Promise((r) => setTimeout(r, 250 * failures))
        try {
          offset = await this.offsetOf(location, options.signal)
        } catch (again) {
          return { data: null, error: fetchError(again) }
        }
      }
    }
    return { data: { path, fullPath: `${this.bucket}/${path}` }, error: null }
  }

  private async offsetOf(location: string, signal?: AbortSignal): Promise<number> {
    const res = await this.requests.fetcher(location, { method: 'HEAD', headers: { 'tus-resumable': TUS }, signal })
    if (!res.ok) throw new Error(`the upload is gone (${res.status})`)
    return Number(res.headers.get('upload-offset') ?? 0)
  }

  /** The object's bytes as a Blob (its type from the server). */
  async download(path: string, options: { range?: [number, number] } = {}): Promise<Result<Blob>> {
    const headers: Record<string, string> = {}
    if (options.range) headers.range = `bytes=${options.range[0]}-${options.range[1]}`
    let response: Response
    try {
      response = await this.requests.fetcher(`${this.requests.url}${this.objectPath(path)}`, { method: 'GET', headers })
    } catch (e) {
      return { data: null, error: fetchError(e) }
    }
    if (!response.ok) return { data: null, error: failure(response.status, await response.json().catch(() => null)) }
    return { data: await response.blob(), error: null }
  }

  info(path: string): Promise<Result<ObjectInfo>> {
    return this.requests.json('GET', `/object/info/${encodeURIComponent(this.bucket)}/${encodePath(path)}`)
  }

  /** Whether the caller can see an object at `path`. */
  async exists(path: string): Promise<Result<boolean>> {
    const { error } = await this.info(path)
    if (!error) return { data: true, error: null }
    if (error.status === 404) return { data: false, error: null }
    return { data: null, error }
  }

  /** One folder level: sub-folders (`id: null`) first, then objects. */
  list(prefix = '', options: ListOptions = {}): Promise<Result<FileObject[]>> {
    return this.requests.json('POST', `/object/list/${encodeURIComponent(this.bucket)}`, { prefix, ...options })
  }

  move(from: string, to: string, options: { destinationBucket?: string } = {}): Promise<Result<{ message: string }>> {
    return this.requests.json('POST', '/object/move', {
      bucketId: this.bucket,
      sourceKey: from,
      destinationKey: to,
      destinationBucket: options.destinationBucket,
    })
  }

  copy(from: string, to: string, options: { destinationBucket?: string; upsert?: boolean } = {}): Promise<Result<{ Key: string }>> {
    return this.requests.json(
      'POST',
      '/object/copy',
      { bucketId: this.bucket, sourceKey: from, destinationKey: to, destinationBucket: options.destinationBucket },
      options.upsert ? { 'x-upsert': 'true' } : {},
    )
  }

  /** Deletes the objects the caller may delete; answers those deleted. */
  remove(paths: string[]): Promise<Result<ObjectInfo[]>> {
    return this.requests.json('DELETE', `/object/${encodeURIComponent(this.bucket)}`, { prefixes: paths })
  }

  /** A URL that downloads the object without a key for `expiresIn` seconds. */
  async createSignedUrl(path: string, expiresIn: number, options: { download?: string | boolean } = {}): Promise<Result<{ signedUrl: string }>> {
    const { data, error } = await this.requests.json<{ signedURL: string }>(
      'POST',
      `/object/sign/${encodeURIComponent(this.bucket)}/${encodePath(path)}`,
      { expiresIn },
    )
    if (error || !data) return { data: null, error }
    return { data: { signedUrl: this.absolute(data.signedURL, options.download) }, error: null }
  }

  async createSignedUrls(paths: string[], expiresIn: number): Promise<Result<{ path: string; signedUrl: string | null; error: string | null }[]>> {
    const { data, error } = await this.requests.json<{ path: string; signedURL: string | null; error: string | null }[]>(
      'POST',
      `/object/sign/${encodeURIComponent(this.bucket)}`,
      { expiresIn, paths },
    )
    if (error || !data) return { data: null, error }
    return {
      data: data.map((d) => ({ path: d.path, signedUrl: d.signedURL ? this.absolute(d.signedURL) : null, error: d.error })),
      error: null,
    }
  }

  /** A URL anyone may upload this one path to, for two hours, as you. */
  async createSignedUploadUrl(path: string, options: { upsert?: boolean } = {}): Promise<Result<{ signedUrl: string; token: string; path: string }>> {
    const { data, error } = await this.requests.json<{ url: string; token: string }>(
      'POST',
      `/object/upload/sign/${encodeURIComponent(this.bucket)}/${encodePath(path)}`,
      undefined,
      options.upsert ? { 'x-upsert': 'true' } : {},
    )
    if (error || !data) return { data: null, error }
    return { data: { signedUrl: this.absolute(data.url), token: data.token, path }, error: null }
  }

  /** Uploads to a URL from `createSignedUploadUrl` (no key needed). */
  async uploadToSignedUrl(path: string, token: string, body: UploadBody, options: UploadOptions = {}): Promise<Result<{ path: string; fullPath: string }>> {
    const blob = toBlob(body, options.contentType)
    const headers: Record<string, string> = {}
    const type = options.contentType ?? blob.type
    if (type) headers['content-type'] = type
    const url = `${this.requests.url}/object/upload/sign/${encodeURIComponent(this.bucket)}/${encodePath(path)}?token=${encodeURIComponent(token)}`
    let response: Response
    try {
      response = await fetch(url, { method: 'PUT', headers, body: blob, signal: options.signal })
    } catch (e) {
      return { data: null, error: fetchError(e) }
    }
    const answer = await response.json().catch(() => null)
    if (!response.ok) return { data: null, error: failure(response.status, answer) }
    return { data: { path, fullPath: (answer as { Key: string }).Key }, error: null }
  }

  /** The URL of an object in a public bucket (no request is made; no key is needed). */
  getPublicUrl(path: string, options: { download?: string | boolean } = {}): { data: { publicUrl: string } } {
    return { data: { publicUrl: this.absolute(`/object/public/${this.bucket}/${path}`, options.download) } }
  }

  /** A path as the server answers it (unencoded, as Supabase's) made a full, encoded URL. */
  private absolute(answer: string, download?: string | boolean): string {
    const [path = '', query] = answer.split('?')
    const params = new URLSearchParams(query ?? '')
    if (download !== undefined && download !== false) params.set('download', download === true ? '' : download)
    const q = params.toString()
    return `${this.requests.url}${encodePath(path)}${q ? `?${q}` : ''}`
  }
}

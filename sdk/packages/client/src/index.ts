/**
 * @reactor/client: one client for a Reactor project.
 *
 * ```ts
 * import { createClient } from '@reactor/client'
 * import type { Database } from './database.types' // from `reactor data types`
 *
 * const reactor = createClient<Database>('http://127.0.0.1:8080', 'rk_pub_…')
 * await reactor.auth.signInWithPassword({ email, password })
 * const { data, error } = await reactor.from('todos').select('id, title').eq('done', false)
 * const hello = await reactor.functions.invoke('hello', { body: { name: 'Ada' } })
 * await reactor.storage.from('avatars').upload('ada/photo.png', file, { upsert: true })
 * ```
 *
 * Every request carries the project key, the signed-in user's access token (refreshed before
 * it expires) and the active organization.
 */

import { AuthClient, type AuthOptions } from '@reactor/auth'
import { DataClient, type ArgsOf, type Count, type FunctionName, type GenericDatabase, type TableName } from '@reactor/data'
import { FunctionsClient } from '@reactor/functions'
import { JobsClient } from '@reactor/jobs'
import { SitesClient } from '@reactor/sites'
import { AiClient } from '@reactor/ai'
import { ConnectClient } from '@reactor/connect'
import { StorageClient } from '@reactor/storage'

export * from '@reactor/auth'
export * from '@reactor/data'
export { FunctionsClient, type FunctionsError, type FunctionsResponse, type InvokeOptions } from '@reactor/functions'
export { JobsClient, type Job, type JobsError, type Run, type RunStatus } from '@reactor/jobs'
export { SitesClient, type Release, type Site, type SitesError, type SitesList } from '@reactor/sites'
export { ConnectClient, type Connection, type ConnectError, type EndUser, type Integration, type Session as ConnectSession } from '@reactor/connect'
export { AiClient, type AiError, type ChatChunk, type ChatCompletion, type ChatMessage, type ChatRequest, type Embeddings, type Model } from '@reactor/ai'
export {
  StorageClient,
  BucketApi,
  type Bucket,
  type BucketOptions,
  type FileObject,
  type ListOptions,
  type ObjectInfo,
  type StorageError,
  type UploadBody,
  type UploadOptions,
} from '@reactor/storage'

export interface ClientOptions {
  auth?: Omit<AuthOptions, 'url' | 'key' | 'fetch'>
  /** Acts in this organization (id or slug) on every request, as `X-Reactor-Org`. */
  org?: string
  /** Extra headers on every request. */
  headers?: Record<string, string>
  /** A `fetch` to use instead of the global one. */
  fetch?: (url: string, init: RequestInit) => Promise<Response>
}

export class ReactorClient<DB = GenericDatabase> {
  readonly auth: AuthClient
  readonly data: DataClient<DB>
  /** `reactor.functions.invoke(name, { body, method, headers })` on `/fn/v1`. */
  readonly functions: FunctionsClient
  /** Buckets and objects on `/storage/v1`: `reactor.storage.from('avatars').upload(…)`. */
  readonly storage: StorageClient
  /** The project's jobs on `/jobs/v1` (service key): enqueue, emit, follow runs. */
  readonly jobs: JobsClient
  /** The project's static sites on `/sites/v1`: list, releases, page URLs. */
  readonly sites: SitesClient
  /** The project's AI gateway on `/gateway/v1`: chat, streamed chat, embeddings, models. */
  readonly ai: AiClient
  /** Third-party integrations on `/connect/v1`: connect accounts, list, proxy calls. */
  readonly connect: ConnectClient
  /** The organization sent with every request, when set. */
  org: string | undefined

  constructor(
    readonly url: string,
    readonly key: string,
    options: ClientOptions = {},
  ) {
    const base = url.replace(/\/$/, '')
    const raw = options.fetch ?? ((u: string, init: RequestInit) => fetch(u, init))
    this.org = options.org
    this.auth = new AuthClient({ ...options.auth, url: `${base}/auth/v1`, key, fetch: raw })
    const authed = async (u: string, init: RequestInit): Promise<Response> => {
      const headers = new Headers(init.headers)
      headers.set('apikey', key)
      for (const [k, v] of Object.entries(options.headers ?? {})) headers.set(k, v)
      const token = await this.auth.accessToken()
      if (token) headers.set('authorization', `Bearer ${token}`)
      if (this.org) headers.set('x-reactor-org', this.org)
      return raw(u, { ...init, headers })
    }
    this.data = new DataClient<DB>(`${base}/data/v1`, authed)
    this.functions = new FunctionsClient(`${base}/fn/v1`, authed)
    this.storage = new StorageClient(`${base}/storage/v1`, authed)
    this.jobs = new JobsClient(`${base}/jobs/v1`, authed)
    this.sites = new SitesClient(`${base}/sites/v1`, authed)
    this.ai = new AiClient(`${base}/gateway/v1`, authed)
    this.connect = new ConnectClient(`${base}/connect/v1`, authed)
  }

  /** Rows of a table or view: `reactor.from('todos').select()`. */
  from<T extends TableName<DB>>(table: T) {
    return this.data.from(table)
  }

  /** Calls a database function through `/data/v1/rpc`. */
  rpc<F extends FunctionName<DB>>(fn: F, args?: ArgsOf<DB, F>, options?: { get?: boolean; head?: boolean; count?: Count }) {
    return this.data.rpc(fn, args ?? {}, options)
  }
}

export function createClient<DB = GenericDatabase>(url: string, key: string, options: ClientOptions = {}): ReactorClient<DB> {
  return new ReactorClient<DB>(url, key, options)
}

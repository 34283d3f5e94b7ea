/**
 * @reactor/auth: users, sessions and organizations on Reactor's `/auth/v1`.
 *
 * The session is kept in a pluggable storage (localStorage in browsers, memory elsewhere) and
 * refreshed before it expires, with one refresh in flight at a time however many requests
 * wait on it. Every call resolves to `{ data, error }` and never throws on an API error.
 */

export interface AuthError {
  code: string
  message: string
  details: string | null
  hint: string | null
  status: number
}

export interface AuthResponse<T> {
  data: T
  error: AuthError | null
}

export interface User {
  id: string
  email: string
  user_metadata?: Record<string, unknown>
  email_confirmed_at?: string | null
  created_at?: string
  updated_at?: string
  [key: string]: unknown
}

export interface Session {
  access_token: string
  refresh_token: string
  token_type: string
  expires_in: number
  /** Unix seconds. */
  expires_at: number
  user: User
}

export interface Org {
  id: string
  name: string
  slug: string
  role?: string
  [key: string]: unknown
}

/** Where the session is kept between page loads: `localStorage` fits. */
export interface SessionStorage {
  getItem(key: string): string | null | Promise<string | null>
  setItem(key: string, value: string): void | Promise<void>
  removeItem(key: string): void | Promise<void>
}

export type AuthEvent = 'SIGNED_IN' | 'SIGNED_OUT' | 'TOKEN_REFRESHED' | 'USER_UPDATED' | 'ORG_SWITCHED'

type Fetch = (url: string, init: RequestInit) => Promise<Response>

export interface AuthOptions {
  /** The server's `/auth/v1` URL. */
  url: string
  /** The project's public key, sent as `apikey`. */
  key: string
  storage?: SessionStorage
  storageKey?: string
  /** Refresh the access token before it expires (default: true). */
  autoRefresh?: boolean
  fetch?: Fetch
}

/** Refresh this many seconds before expiry. */
const REFRESH_MARGIN = 30

export class MemoryStorage implements SessionStorage {
  private items = new Map<string, string>()
  getItem(key: string): string | null {
    return this.items.get(key) ?? null
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value)
  }
  removeItem(key: string): void {
    this.items.delete(key)
  }
}

function defaultStorage(): SessionStorage {
  const g = globalThis as { localStorage?: SessionStorage }
  return g.localStorage ?? new MemoryStorage()
}

export class AuthClient {
  private readonly url: string
  private readonly key: string
  private readonly storage: SessionStorage
  private readonly storageKey: string
  private readonly autoRefresh: boolean
  private readonly fetcher: Fetch
  private session: Session | null = null
  private loaded: Promise<void> | null = null
  private refreshing: Promise<AuthResponse<{ session: Session | null }>> | null = null
  private timer: ReturnType<typeof setTimeout> | null = null
  private listeners = new Set<(event: AuthEvent, session: Session | null) => void>()

  readonly orgs: OrgsApi

  constructor(options: AuthOptions) {
    this.url = options.url.replace(/\/$/, '')
    this.key = options.key
    this.storage = options.storage ?? defaultStorage()
    this.storageKey = options.storageKey ?? 'reactor.auth.session'
    this.autoRefresh = options.autoRefresh ?? true
    this.fetcher = options.fetch ?? ((url, init) => fetch(url, init))
    this.orgs = new OrgsApi(this)
  }

  /** @internal A JSON request to `/auth/v1`, with the key and, when signed in, the token. */
  async request<T>(method: string, path: string, body?: unknown, token?: string | null): Promise<AuthResponse<T | null>> {
    const headers: Record<string, string> = { apikey: this.key }
    if (body !== undefined) headers['content-type'] = 'application/json'
    if (token) headers['authorization'] = `Bearer ${token}`
    let res: Response
    try {
      res = await this.fetcher(`${this.url}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      })
    } catch (e) {
      return { data: null, error: err(0, 'FETCH_ERROR', e instanceof Error ? e.message : String(e)) }
    }
    const text = await res.text()
    let json: unknown = null
    try {
      json = text ? JSON.parse(text) : null
    } catch {
      json = null
    }
    if (!res.ok) {
      const e = (json ?? {}) as Partial<AuthError>
      return {
        data: null,
        error: {
          code: e.code ?? String(res.status),
          message: e.message ?? (text || res.statusText),
          details: e.details ?? null,
          hint: e.hint ?? null,
          status: res.status,
        },
      }
    }
    return { data: json as T, error: null }
  }

  private async load(): Promise<void> {
    this.loaded ??= (async () => {
      const stored = await this.storage.getItem(this.storageKey)
      if (stored) {
        try {
          this.session = JSON.parse(stored) as Session
          this.schedule()
        } catch {
          await this.storage.removeItem(this.storageKey)
        }
      }
    })()
    return this.loaded
  }

  private async save(session: Session | null, event: AuthEvent): Promise<void> {
    this.session = session
    if (session) await this.storage.setItem(this.storageKey, JSON.stringify(session))
    else await this.storage.removeItem(this.storageKey)
    this.schedule()
    for (const listener of this.listeners) listener(event, session)
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    if (!this.autoRefresh || !this.session) return
    const wait = Math.max(0, (this.session.expires_at - REFRESH_MARGIN) * 1000 - Date.now())
    this.timer = setTimeout(() => void this.refreshSession(), wait)
    // Never keep a process alive just to refresh a token.
    const t = this.timer as { unref?: () => void }
    t.unref?.()
  }

  /** Creates an account; with confirmations off, signs in at once. */
  async signUp(credentials: {
    email: string
    password: string
    options?: { data?: Record<string, unknown>; inviteToken?: string }
  }): Promise<AuthResponse<{ user: User | null; session: Session | null }>> {
    const body: Record<string, unknown> = {
      email: credentials.email,
      password: credentials.password,
    }
    if (credentials.options?.data) body['data'] = credentials.options.data
    if (credentials.options?.inviteToken) body['invite_token'] = credentials.options.inviteToken
    const { data, error } = await this.request<Session | User>('POST', '/signup', body)
    if (error || !data) return { data: { user: null, session: null }, error }
    if ('access_token' in data) {
      const session = data as Session
      await this.save(session, 'SIGNED_IN')
      return { data: { user: session.user, session }, error: null }
    }
    return { data: { user: data as User, session: null }, error: null }
  }

  async signInWithPassword(credentials: {
    email: string
    password: string
  }): Promise<AuthResponse<{ user: User | null; session: Session | null }>> {
    const { data, error } = await this.request<Session>('POST', '/token?grant_type=password', credentials)
    if (error || !data) return { data: { user: null, session: null }, error }
    await this.save(data, 'SIGNED_IN')
    return { data: { user: data.user, session: data }, error: null }
  }

  /** Ends this session (`local`), every session of the user (`global`), or the others. */
  async signOut(options: { scope?: 'local' | 'global' | 'others' } = {}): Promise<{ error: AuthError | null }> {
    await this.load()
    const token = this.session?.access_token
    let error: AuthError | null = null
    if (token) {
      const scope = options.scope ?? 'local'
      error = (await this.request('POST', `/logout?scope=${scope}`, undefined, token)).error
      if (scope === 'others') return { error }
    }
    await this.save(null, 'SIGNED_OUT')
    return { error }
  }

  /** The stored session, refreshed first when it is about to expire. */
  async getSession(): Promise<AuthResponse<{ session: Session | null }>> {
    await this.load()
    if (this.session && this.session.expires_at - REFRESH_MARGIN <= Date.now() / 1000) {
      return this.refreshSession()
    }
    return { data: { session: this.session }, error: null }
  }

  /** The access token to send, or null when signed out. */
  async accessToken(): Promise<string | null> {
    const { data } = await this.getSession()
    return data.session?.access_token ?? null
  }

  /**
   * Exchanges the refresh token for a new session. Concurrent callers share one request.
   * `orgId` switches the session's active organization (id or slug).
   */
  refreshSession(orgId?: string): Promise<AuthResponse<{ session: Session | null }>> {
    if (this.refreshing && orgId === undefined) return this.refreshing
    const run = (async () => {
      await this.load()
      const refresh = this.session?.refresh_token
      if (!refresh) {
        return { data: { session: null }, error: err(401, 'no_session', 'not signed in') }
      }
      const body: Record<string, unknown> = { refresh_token: refresh }
      if (orgId !== undefined) body['org_id'] = orgId
      const { data, error } = await this.request<Session>('POST', '/token?grant_type=refresh_token', body)
      if (error || !data) {
        if (error && error.status >= 400 && error.status < 500) await this.save(null, 'SIGNED_OUT')
        return { data: { session: null }, error }
      }
      await this.save(data, orgId === undefined ? 'TOKEN_REFRESHED' : 'ORG_SWITCHED')
      return { data: { session: data }, error: null }
    })()
    if (orgId === undefined) {
      this.refreshing = run
      void run.finally(() => {
        if (this.refreshing === run) this.refreshing = null
      })
    }
    return run
  }

  async getUser(): Promise<AuthResponse<{ user: User | null }>> {
    const token = await this.accessToken()
    if (!token) return { data: { user: null }, error: err(401, 'no_session', 'not signed in') }
    const { data, error } = await this.request<User>('GET', '/user', undefined, token)
    return { data: { user: data }, error }
  }

  async updateUser(attributes: {
    email?: string
    password?: string
    data?: Record<string, unknown>
  }): Promise<AuthResponse<{ user: User | null }>> {
    const token = await this.accessToken()
    if (!token) return { data: { user: null }, error: err(401, 'no_session', 'not signed in') }
    const { data, error } = await this.request<User>('PUT', '/user', attributes, token)
    if (data && this.session) await this.save({ ...this.session, user: data }, 'USER_UPDATED')
    return { data: { user: data }, error }
  }

  async resetPasswordForEmail(email: string): Promise<{ error: AuthError | null }> {
    return { error: (await this.request('POST', '/recover', { email })).error }
  }

  /** Completes a link sent by email (`signup`, `recovery`, `invite`…) and signs in. */
  async verify(params: { type: string; token: string; email?: string; password?: string }): Promise<
    AuthResponse<{ session: Session | null }>
  > {
    const { data, error } = await this.request<Session>('POST', '/verify', params)
    if (data && 'access_token' in data) await this.save(data, 'SIGNED_IN')
    return { data: { session: data }, error }
  }

  onAuthStateChange(callback: (event: AuthEvent, session: Session | null) => void): {
    data: { subscription: { unsubscribe: () => void } }
  } {
    this.listeners.add(callback)
    return { data: { subscription: { unsubscribe: () => this.listeners.delete(callback) } } }
  }
}

/** Organizations of the signed-in user. */
export class OrgsApi {
  constructor(private readonly auth: AuthClient) {}

  private async call<T>(method: string, path: string, body?: unknown): Promise<AuthResponse<T | null>> {
    const token = await this.auth.accessToken()
    if (!token) return { data: null, error: err(401, 'no_session', 'not signed in') }
    return this.auth.request<T>(method, path, body, token)
  }

  async list(): Promise<AuthResponse<Org[] | null>> {
    const { data, error } = await this.call<{ orgs: Org[] } | Org[]>('GET', '/orgs')
    return { data: data === null ? null : Array.isArray(data) ? data : data.orgs, error }
  }

  create(org: { name: string; slug?: string }): Promise<AuthResponse<Org | null>> {
    return this.call<Org>('POST', '/orgs', org)
  }

  /** Makes `org` (id or slug) the session's active organization. */
  async switch(org: string): Promise<AuthResponse<{ session: Session | null }>> {
    return this.auth.refreshSession(org)
  }

  members(org: string): Promise<AuthResponse<unknown>> {
    return this.call('GET', `/orgs/${encodeURIComponent(org)}/members`)
  }

  invite(org: string, invite: { email: string; role?: string }): Promise<AuthResponse<{ token: string; [k: string]: unknown } | null>> {
    return this.call('POST', `/orgs/${encodeURIComponent(org)}/invites`, invite)
  }
}

function err(status: number, code: string, message: string): AuthError {
  return { code, message, details: null, hint: null, status }
}

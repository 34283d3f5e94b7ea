/**
 * @reactor/connect: the project's third-party integrations on `/connect/v1` — connecting a
 * user's account (the OAuth dance in the browser, or an API key), the connections a caller
 * may use, and calls to the provider's API through the server's proxy.
 *
 * ```ts
 * const reactor = createClient(url, 'rk_pub_…')            // a signed-in user, or the service key
 * await reactor.connect.connect('github', { redirectTo: location.href })   // to GitHub and back
 * const { data: list } = await reactor.connect.list()
 * const { data: res } = await reactor.connect.proxy(list![0].id, '/user')  // the provider's Response
 * ```
 *
 * Every call resolves to `{ data, error }` and never throws on an API error.
 */

export interface ConnectError {
  code: string
  message: string
  details: string | null
  hint: string | null
  status: number
}

export interface Result<T> {
  data: T | null
  error: ConnectError | null
}

export interface Integration {
  name: string
  provider: string
  display_name: string
  auth_mode: 'oauth2' | 'oauth2_client_credentials' | 'api_key' | 'basic'
  scopes: string[]
  /** Whether the provider's webhooks are verified by signature. */
  webhooks: boolean
}

export interface Connection {
  id: string
  integration: string
  provider: string
  auth_mode: string
  user_id: string | null
  org_id: string | null
  end_user_id: string | null
  /** `failed` once the provider refused a refresh for good: connect again. */
  status: 'active' | 'failed'
  scopes: string[]
  config: Record<string, string>
  expires_at: string | null
  last_refresh_at: string | null
  last_error: string | null
  created_at: string
  updated_at: string
}

export interface Session {
  token: string
  /** Where to send the browser (OAuth integrations). */
  authorize_url: string | null
  expires_at: string
}

/** For whom the service key acts (an end user of the app, not a Reactor user). */
export interface EndUser {
  id: string
  org_id?: string
}

/** How the SDK reaches the server: adds the project key, the user's token and the org. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>

const PROXIED = 'x-reactor-proxied'

function fetchError(e: unknown): ConnectError {
  return { code: 'FETCH_ERROR', message: String(e instanceof Error ? e.message : e), details: null, hint: null, status: 0 }
}

/** Reactor's error body as a `ConnectError`. */
async function errorOf(response: Response): Promise<ConnectError> {
  const text = await response.text()
  let b: Partial<ConnectError> = {}
  try {
    b = text ? JSON.parse(text) : {}
  } catch {
    // not JSON: the status says enough
  }
  return {
    code: typeof b.code === 'string' ? b.code : `http_${response.status}`,
    message: typeof b.message === 'string' ? b.message : `the server answered ${response.status}`,
    details: b.details ?? null,
    hint: b.hint ?? null,
    status: response.status,
  }
}

export class ConnectClient {
  constructor(
    readonly url: string,
    private readonly fetcher: Fetch,
  ) {}

  private async call<T>(method: string, path: string, body?: unknown): Promise<Result<T>> {
    let response: Response
    try {
      response = await this.fetcher(`${this.url}${path}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
    } catch (e) {
      return { data: null, error: fetchError(e) }
    }
    if (!response.ok) return { data: null, error: await errorOf(response) }
    const text = await response.text()
    return { data: (text ? JSON.parse(text) : null) as T, error: null }
  }

  /** The project's integrations. */
  async integrations(): Promise<Result<Integration[]>> {
    const { data, error } = await this.call<{ integrations: Integration[] }>('GET', '/integrations')
    return { data: data?.integrations ?? null, error }
  }

  /**
   * A connect session for an OAuth integration: its `authorize_url` is where the browser goes.
   * `redirectTo` must be on one of the integration's `redirect_origins`; the browser comes
   * back to it with `?connection_id=…&integration=…` (or `?error=…`).
   */
  createSession(integration: string, options: { redirectTo?: string; endUser?: EndUser } = {}): Promise<Result<Session>> {
    return this.call('POST', '/sessions', { integration, redirect_to: options.redirectTo, end_user: options.endUser })
  }

  /**
   * Connects the signed-in user's account in a browser: makes a session and leaves the page
   * for the provider (`navigate`, by default `location.assign`). Resolves (before leaving)
   * with the session, or with the error and no navigation.
   */
  async connect(
    integration: string,
    options: { redirectTo?: string; navigate?: (url: string) => void } = {},
  ): Promise<Result<Session>> {
    const here = (globalThis as { location?: { href: string; assign(url: string): void } }).location
    const redirectTo = options.redirectTo ?? here?.href
    const result = await this.createSession(integration, { redirectTo })
    const url = result.data?.authorize_url
    if (url) {
      const navigate = options.navigate ?? ((u: string) => here?.assign(u))
      navigate(url)
    } else if (result.data && !result.error) {
      return {
        data: null,
        error: {
          code: 'no_browser_step',
          message: `integration \`${integration}\` connects without a browser: use createConnection()`,
          details: null,
          hint: null,
          status: 0,
        },
      }
    }
    return result
  }

  /** An API key, basic or client-credentials connection. */
  createConnection(input: {
    integration: string
    apiKey?: string
    username?: string
    password?: string
    config?: Record<string, string>
    endUser?: EndUser
  }): Promise<Result<Connection>> {
    return this.call('POST', '/connections', {
      integration: input.integration,
      api_key: input.apiKey,
      username: input.username,
      password: input.password,
      config: input.config,
      end_user: input.endUser,
    })
  }

  /** The connections the caller may use (its org's; all of them for the service key). */
  async list(filter: { integration?: string; endUserId?: string } = {}): Promise<Result<Connection[]>> {
    const q = new URLSearchParams()
    if (filter.integration) q.set('integration', filter.integration)
    if (filter.endUserId) q.set('end_user_id', filter.endUserId)
    const query = q.toString()
    const { data, error } = await this.call<{ connections: Connection[] }>('GET', `/connections${query ? `?${query}` : ''}`)
    return { data: data?.connections ?? null, error }
  }

  get(id: string): Promise<Result<Connection>> {
    return this.call('GET', `/connections/${encodeURIComponent(id)}`)
  }

  /** Deletes a connection and its credentials. */
  async delete(id: string): Promise<Result<null>> {
    const { error } = await this.call('DELETE', `/connections/${encodeURIComponent(id)}`)
    return { data: null, error }
  }

  /**
   * A call to the provider's API through the proxy: `path` (with its query) under the
   * provider's base URL, `init` as for `fetch`. `data` is the provider's `Response`, whatever
   * its status; `error` is Reactor's refusal.
   */
  async proxy(id: string, path: string, init: RequestInit = {}): Promise<Result<Response>> {
    const rest = path.replace(/^\/+/, '')
    let response: Response
    try {
      response = await this.fetcher(`${this.url}/proxy/${encodeURIComponent(id)}/${rest}`, {
        ...init,
        method: init.method ?? 'GET',
      })
    } catch (e) {
      return { data: null, error: fetchError(e) }
    }
    if (response.headers.get(PROXIED) === null) return { data: null, error: await errorOf(response) }
    return { data: response, error: null }
  }
}

/**
 * @reactor/sites: the project's static sites on `/sites/v1` — which sites a server serves and
 * from where, the releases they came from, and the URL of any page.
 *
 * ```ts
 * const reactor = createClient(url, key)
 * const { data } = await reactor.sites.list()          // sites, the release in force
 * const page = reactor.sites.pageUrl('web', '/about')  // http://host/sites/v1/web/about
 * const { data: releases } = await reactor.sites.releases()   // service key, reactor-server
 * ```
 *
 * Every call resolves to `{ data, error }` and never throws on an API error.
 */

export interface SitesError {
  code: string
  message: string
  details: string | null
  hint: string | null
  status: number
}

export interface Result<T> {
  data: T | null
  error: SitesError | null
}

export interface Site {
  name: string
  /** Where the site is served under the API prefix, e.g. `/sites/v1/web/`. */
  url: string
  spa: boolean
  /** `release` on a server that was deployed to; `working tree` under `reactor dev`. */
  source: 'release' | 'working tree'
  /** Files and bytes of a release's site (null for a working tree). */
  files: number | null
  bytes: number | null
}

export interface SitesList {
  /** The release the sites come from (null under `reactor dev` or before a deploy). */
  release: string | null
  /** The site served at `/`. */
  default: string | null
  domain: string | null
  sites: Site[]
}

export interface Release {
  id: string
  short: string
  active: boolean
  status: 'pending' | 'failed' | 'ready'
  error: string | null
  created_at: string
  created_by: string | null
  git_commit: string | null
  activated_at: string | null
  activated_by: string | null
  activation: 'deploy' | 'rollback' | null
}

/** How the SDK reaches the server: adds the project key, the user's token and the org. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>

export class SitesClient {
  constructor(
    readonly url: string,
    private readonly fetcher: Fetch,
  ) {}

  private async call<T>(path: string): Promise<Result<T>> {
    let response: Response
    try {
      response = await this.fetcher(`${this.url}${path}`, { method: 'GET' })
    } catch (e) {
      return {
        data: null,
        error: { code: 'FETCH_ERROR', message: String(e instanceof Error ? e.message : e), details: null, hint: null, status: 0 },
      }
    }
    const text = await response.text()
    let parsed: unknown = null
    try {
      parsed = text ? JSON.parse(text) : null
    } catch {
      parsed = text
    }
    if (!response.ok) {
      const b = (parsed ?? {}) as Partial<SitesError>
      return {
        data: null,
        error: {
          code: typeof b.code === 'string' ? b.code : `http_${response.status}`,
          message: typeof b.message === 'string' ? b.message : `the server answered ${response.status}`,
          details: b.details ?? null,
          hint: b.hint ?? null,
          status: response.status,
        },
      }
    }
    return { data: parsed as T, error: null }
  }

  /** The sites this server serves, where from, and the release in force. */
  list(): Promise<Result<SitesList>> {
    return this.call('')
  }

  /** The releases, newest first (service key; a `reactor-server`, not `reactor dev`). */
  async releases(): Promise<Result<Release[]>> {
    const { data, error } = await this.call<{ releases: Release[] }>('/releases')
    return { data: data?.releases ?? null, error }
  }

  /** The public URL of `path` in site `name` (no request is made). */
  pageUrl(name: string, path = '/'): string {
    const rest = path.startsWith('/') ? path : `/${path}`
    return `${this.url}/${encodeURIComponent(name)}${rest.split('/').map(encodeURIComponent).join('/')}`
  }
}

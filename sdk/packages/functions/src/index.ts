/**
 * @reactor/functions: calls the project's functions on `/fn/v1`.
 *
 * ```ts
 * const { data, error } = await reactor.functions.invoke('hello', { body: { name: 'Ada' } })
 * ```
 *
 * Resolves to `{ data, error, status, response }` and never throws on an API error. `data` is
 * parsed by the answer's content type: JSON → a value, `text/*` → a string, anything else →
 * an `ArrayBuffer`. A function's own error status (4xx/5xx) is an `error` with `code`
 * `function_http_error` and the parsed body in `context`; Reactor's errors (`function_timeout`,
 * `function_not_found`…) keep their code, message, details and hint.
 */

export interface FunctionsError {
  code: string
  message: string
  details: string | null
  hint: string | null
  status: number
  /** For `function_http_error`: the body the function answered with. */
  context?: unknown
}

export interface FunctionsResponse<T> {
  data: T | null
  error: FunctionsError | null
  status: number
  /** The raw answer, for headers or streaming (its body is already read unless `stream`). */
  response: Response | null
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD' | 'OPTIONS'

export interface InvokeOptions {
  /** An object or array is sent as JSON; a string as text; bytes, a Blob or form data as is. */
  body?: unknown
  /** [default: POST with a body, GET without] */
  method?: HttpMethod
  headers?: Record<string, string>
  /** A path after the function's name, e.g. `/items/42?full=1`. */
  path?: string
  /** Hand back the `Response` unread (`data` stays null) to consume a streamed body. */
  stream?: boolean
  signal?: AbortSignal
}

/** How the SDK reaches the server: adds the project key, the user's token and the org. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>

const REACTOR_CODES = /^(function_|request_|internal$|not_found$|invalid_|unauthorized|forbidden)/

export class FunctionsClient {
  constructor(
    readonly url: string,
    private readonly fetcher: Fetch,
  ) {}

  async invoke<T = unknown>(name: string, options: InvokeOptions = {}): Promise<FunctionsResponse<T>> {
    const headers = new Headers(options.headers)
    let body: BodyInit | undefined
    const b = options.body
    if (b === undefined || b === null) {
      body = undefined
    } else if (typeof b === 'string') {
      body = b
      if (!headers.has('content-type')) headers.set('content-type', 'text/plain;charset=UTF-8')
    } else if (isRaw(b)) {
      body = b as BodyInit
    } else {
      body = JSON.stringify(b)
      if (!headers.has('content-type')) headers.set('content-type', 'application/json')
    }
    const method = options.method ?? (body === undefined ? 'GET' : 'POST')
    const path = options.path ? `/${options.path.replace(/^\//, '')}` : ''
    let response: Response
    try {
      response = await this.fetcher(`${this.url}/${encodeURIComponent(name)}${path}`, {
        method,
        headers,
        body,
        signal: options.signal,
      })
    } catch (e) {
      return {
        data: null,
        error: { code: 'FETCH_ERROR', message: String(e instanceof Error ? e.message : e), details: null, hint: null, status: 0 },
        status: 0,
        response: null,
      }
    }
    if (options.stream && response.ok) return { data: null, error: null, status: response.status, response }
    const data = await parse(response)
    if (response.ok) return { data: data as T, error: null, status: response.status, response }
    const reactor = data as Partial<FunctionsError> | null
    if (reactor && typeof reactor === 'object' && typeof reactor.code === 'string' && REACTOR_CODES.test(reactor.code)) {
      return {
        data: null,
        error: {
          code: reactor.code,
          message: reactor.message ?? '',
          details: reactor.details ?? null,
          hint: reactor.hint ?? null,
          status: response.status,
        },
        status: response.status,
        response,
      }
    }
    return {
      data: null,
      error: {
        code: 'function_http_error',
        message: `the function answered ${response.status}`,
        details: null,
        hint: null,
        status: response.status,
        context: data,
      },
      status: response.status,
      response,
    }
  }
}

function isRaw(b: unknown): boolean {
  return (
    b instanceof ArrayBuffer ||
    ArrayBuffer.isView(b) ||
    (typeof Blob !== 'undefined' && b instanceof Blob) ||
    (typeof FormData !== 'undefined' && b instanceof FormData) ||
    (typeof URLSearchParams !== 'undefined' && b instanceof URLSearchParams) ||
    (typeof ReadableStream !== 'undefined' && b instanceof ReadableStream)
  )
}

async function parse(response: Response): Promise<unknown> {
  if (response.status === 204 || response.status === 304) return null
  const type = response.headers.get('content-type') ?? ''
  if (type.includes('json')) {
    const text = await response.text()
    try {
      return text ? JSON.parse(text) : null
    } catch {
      return text
    }
  }
  if (type.startsWith('text/') || type === '') return response.text()
  return response.arrayBuffer()
}

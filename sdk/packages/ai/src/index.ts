/**
 * @reactor/ai: the project's AI gateway on `/gateway/v1` — chat completions (whole or
 * streamed), embeddings and the models `reactor.toml` declares, in OpenAI's wire format.
 *
 * ```ts
 * const reactor = createClient(url, 'rk_pub_…')   // a signed-in user, or the service key
 * const { data, error } = await reactor.ai.chat({ model: 'fast', messages: [{ role: 'user', content: 'Hi' }] })
 * const { data: stream } = await reactor.ai.stream({ model: 'fast', messages })
 * for await (const chunk of stream!) process.stdout.write(chunk.choices[0]?.delta?.content ?? '')
 * ```
 *
 * Every call resolves to `{ data, error }` and never throws on an API error.
 */

export interface AiError {
  code: string
  message: string
  /** OpenAI's error `type` (`invalid_request_error`, `rate_limit_error`, …). */
  details: string | null
  hint: string | null
  status: number
  /** Seconds to wait, when the gateway answered 429. */
  retryAfter?: number
}

export interface Result<T> {
  data: T | null
  error: AiError | null
}

export type Role = 'system' | 'developer' | 'user' | 'assistant' | 'tool'

export interface ChatMessage {
  role: Role
  content: string | null | Array<{ type: 'text'; text: string } | { type: 'image_url'; image_url: { url: string } }>
  name?: string
  tool_calls?: ToolCall[]
  tool_call_id?: string
}

export interface ToolCall {
  id: string
  type: 'function'
  function: { name: string; arguments: string }
}

export interface ChatRequest {
  /** A model of the project (`GET /gateway/v1/models`), not an upstream's name. */
  model: string
  messages: ChatMessage[]
  max_tokens?: number
  temperature?: number
  top_p?: number
  stop?: string | string[]
  tools?: Array<{ type: 'function'; function: { name: string; description?: string; parameters?: unknown } }>
  tool_choice?: 'auto' | 'none' | 'required' | { type: 'function'; function: { name: string } }
  [other: string]: unknown
}

export interface Usage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
}

export interface ChatCompletion {
  id: string
  object: 'chat.completion'
  created: number
  model: string
  choices: Array<{ index: number; message: ChatMessage; finish_reason: string | null }>
  usage?: Usage
  /** Which target served (`provider/model`), from `x-reactor-gateway-target`. */
  target?: string
}

export interface ChatChunk {
  id: string
  object: 'chat.completion.chunk'
  created: number
  model: string
  choices: Array<{ index: number; delta: Partial<ChatMessage>; finish_reason: string | null }>
  usage?: Usage | null
}

export interface Embeddings {
  object: 'list'
  data: Array<{ object: 'embedding'; index: number; embedding: number[] }>
  model: string
  usage?: { prompt_tokens: number; total_tokens: number }
}

export interface Model {
  id: string
  object: 'model'
  owned_by: string
}

/** How the SDK reaches the server: adds the project key, the user's token and the org. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>

export class AiClient {
  constructor(
    readonly url: string,
    private readonly fetcher: Fetch,
  ) {}

  private async send(method: string, path: string, body?: unknown): Promise<Result<Response>> {
    let response: Response
    try {
      const init: RequestInit = { method }
      if (body !== undefined) {
        init.body = JSON.stringify(body)
        init.headers = { 'content-type': 'application/json' }
      }
      response = await this.fetcher(`${this.url}${path}`, init)
    } catch (e) {
      return { data: null, error: { code: 'FETCH_ERROR', message: String(e instanceof Error ? e.message : e), details: null, hint: null, status: 0 } }
    }
    if (response.ok) return { data: response, error: null }
    const text = await response.text()
    let parsed: any = null
    try {
      parsed = JSON.parse(text)
    } catch {}
    // The gateway answers in OpenAI's shape; the key check in front of it in Reactor's.
    const e = parsed?.error ?? parsed ?? {}
    const after = Number(response.headers.get('retry-after'))
    return {
      data: null,
      error: {
        code: typeof e.code === 'string' ? e.code : `http_${response.status}`,
        message: typeof e.message === 'string' ? e.message : `the server answered ${response.status}`,
        details: typeof e.type === 'string' ? e.type : (e.details ?? null),
        hint: e.hint ?? null,
        status: response.status,
        ...(Number.isFinite(after) && after > 0 ? { retryAfter: after } : {}),
      },
    }
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<Result<T>> {
    const { data, error } = await this.send(method, path, body)
    if (error || !data) return { data: null, error }
    const value = (await data.json()) as T
    return { data: value, error: null }
  }

  /** A whole chat completion. */
  async chat(request: ChatRequest): Promise<Result<ChatCompletion>> {
    const { data, error } = await this.send('POST', '/chat/completions', { ...request, stream: false })
    if (error || !data) return { data: null, error }
    const completion = (await data.json()) as ChatCompletion
    const target = data.headers.get('x-reactor-gateway-target')
    if (target) completion.target = target
    return { data: completion, error: null }
  }

  /** A streamed chat completion: the chunks as the model writes them. */
  async stream(request: ChatRequest): Promise<Result<AsyncIterable<ChatChunk>>> {
    const { data, error } = await this.send('POST', '/chat/completions', { ...request, stream: true })
    if (error || !data) return { data: null, error }
    return { data: chunks(data), error: null }
  }

  async embeddings(request: { model: string; input: string | string[]; [other: string]: unknown }): Promise<Result<Embeddings>> {
    return this.json('POST', '/embeddings', request)
  }

  /** The models this project declares. */
  async models(): Promise<Result<Model[]>> {
    const { data, error } = await this.json<{ data: Model[] }>('GET', '/models')
    return { data: data?.data ?? null, error }
  }
}

/** Server-sent events to chunks, until `[DONE]`. */
async function* chunks(response: Response): AsyncIterable<ChatChunk> {
  if (!response.body) return
  const reader = response.body.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) break
    buffer += decoder.decode(value, { stream: true })
    let end: number
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue
        const data = line.slice(5).trim()
        if (data === '[DONE]') return
        yield JSON.parse(data) as ChatChunk
      }
    }
  }
}

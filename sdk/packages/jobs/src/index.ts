/**
 * @reactor/jobs: the project's jobs on `/jobs/v1` — enqueue a run, emit an event, follow runs.
 *
 * ```ts
 * // server-side, with the service key: jobs are the project's machinery
 * const reactor = createClient(url, process.env.REACTOR_SERVICE_KEY!)
 * const { data: run } = await reactor.jobs.enqueue('send-invoice', { order_id: 42 })
 * const { data: done } = await reactor.jobs.wait(run!.id)
 * ```
 *
 * Every call resolves to `{ data, error }` and never throws on an API error.
 */

export interface JobsError {
  code: string
  message: string
  details: string | null
  hint: string | null
  status: number
}

export interface Result<T> {
  data: T | null
  error: JobsError | null
}

export type RunStatus = 'queued' | 'running' | 'succeeded' | 'dead' | 'cancelled'

export interface Run {
  id: string
  job: string
  status: RunStatus
  trigger: { type: 'queue' | 'cron' | 'event'; tick?: string; event?: string; table?: string }
  payload: unknown
  attempts: number
  max_attempts: number
  run_at: string
  created_at: string
  started_at: string | null
  finished_at: string | null
  duration_ms: number | null
  last_error: string | null
  /** The function's log lines of its last attempt. */
  logs: { time: string; level: string; message: string }[]
}

export interface Job {
  name: string
  function: string
  trigger: { type: 'queue' | 'cron' | 'event'; schedule?: string; timezone?: string | null; event?: string }
  next_run_at: string | null
  last_status: RunStatus | null
  max_attempts: number
}

/** How the SDK reaches the server: adds the project key, the user's token and the org. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>

export class JobsClient {
  constructor(
    readonly url: string,
    private readonly fetcher: Fetch,
  ) {}

  private async call<T>(method: string, path: string, body?: unknown): Promise<Result<T>> {
    let response: Response
    try {
      const init: RequestInit = { method }
      if (body !== undefined) {
        init.body = JSON.stringify(body)
        init.headers = { 'content-type': 'application/json' }
      }
      response = await this.fetcher(`${this.url}${path}`, init)
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
      const b = (parsed ?? {}) as Partial<JobsError>
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

  /** The project's jobs, with their triggers, next cron run and last status. */
  list(): Promise<Result<Job[]>> {
    return this.call('GET', '')
  }

  /** Enqueues a run of `job` now; the run. */
  enqueue(job: string, payload: unknown = null): Promise<Result<Run>> {
    return this.call('POST', `/${encodeURIComponent(job)}/runs`, payload)
  }

  /** Emits a custom event: one run of every job triggered by it. */
  async emit(event: string, payload: unknown = null): Promise<Result<Run[]>> {
    const { data, error } = await this.call<{ runs: Run[] }>('POST', `/events/${encodeURIComponent(event)}`, payload)
    return { data: data?.runs ?? null, error }
  }

  /** A job's newest runs. */
  runs(job: string, options: { limit?: number } = {}): Promise<Result<Run[]>> {
    return this.call('GET', `/${encodeURIComponent(job)}/runs?limit=${options.limit ?? 50}`)
  }

  run(id: string): Promise<Result<Run>> {
    return this.call('GET', `/runs/${encodeURIComponent(id)}`)
  }

  cancel(id: string): Promise<Result<Run>> {
    return this.call('POST', `/runs/${encodeURIComponent(id)}/cancel`)
  }

  retry(id: string): Promise<Result<Run>> {
    return this.call('POST', `/runs/${encodeURIComponent(id)}/retry`)
  }

  /** Polls a run until it has finished (succeeded, dead or cancelled) or `timeoutMs` passed. */
  async wait(id: string, options: { timeoutMs?: number; intervalMs?: number } = {}): Promise<Result<Run>> {
    const deadline = Date.now() + (options.timeoutMs ?? 60_000)
    for (;;) {
      const res = await this.run(id)
      if (res.error || !res.data) return res
      if (['succeeded', 'dead', 'cancelled'].includes(res.data.status)) return res
      if (Date.now() > deadline) {
        return {
          data: res.data,
          error: { code: 'WAIT_TIMEOUT', message: `run ${id} is still ${res.data.status}`, details: null, hint: null, status: 0 },
        }
      }
      await new Promise((r) => setTimeout(r, options.intervalMs ?? 200))
    }
  }
}

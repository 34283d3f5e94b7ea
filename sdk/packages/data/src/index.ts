/**
 * @reactor/data: a chainable query builder for Reactor's `/data/v1` (PostgREST's grammar).
 *
 * Every request resolves to `{ data, error, count, status }` and never throws on an API
 * error. Generic over the `Database` type `reactor data types` writes, so rows, inserts and
 * updates are typed.
 */

/** The four fields every Reactor error carries, plus the HTTP status. */
export interface ReactorError {
  code: string
  message: string
  details: string | null
  hint: string | null
  status: number
}

export interface ReactorResponse<T> {
  data: T | null
  error: ReactorError | null
  /** With `count: 'exact'`: the total number of matching rows. */
  count: number | null
  status: number
}

/** How the SDK reaches the server: adds the project key, the user's token and the org. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>

type AnyRecord = Record<string, unknown>

/** The shape `reactor data types` generates. */
export interface GenericTable {
  Row: AnyRecord
  Insert: AnyRecord
  Update: AnyRecord
}
export interface GenericFunction {
  Args: AnyRecord
  Returns: unknown
}
export interface GenericSchema {
  Tables: Record<string, GenericTable>
  Views: Record<string, { Row: AnyRecord }>
  Functions: Record<string, GenericFunction>
}
export interface GenericDatabase {
  public: GenericSchema
}

type Tables<DB> = DB extends { public: { Tables: infer T } } ? T : Record<string, GenericTable>
type Views<DB> = DB extends { public: { Views: infer V } } ? V : Record<string, { Row: AnyRecord }>
type Functions<DB> = DB extends { public: { Functions: infer F } } ? F : Record<string, GenericFunction>

export type TableName<DB> = (keyof Tables<DB> | keyof Views<DB>) & string
export type RowOf<DB, T extends string> = T extends keyof Tables<DB>
  ? Tables<DB>[T] extends { Row: infer R } ? R : AnyRecord
  : T extends keyof Views<DB>
    ? Views<DB>[T] extends { Row: infer R } ? R : AnyRecord
    : AnyRecord
export type InsertOf<DB, T extends string> = T extends keyof Tables<DB>
  ? Tables<DB>[T] extends { Insert: infer I } ? I : AnyRecord
  : AnyRecord
export type UpdateOf<DB, T extends string> = T extends keyof Tables<DB>
  ? Tables<DB>[T] extends { Update: infer U } ? U : AnyRecord
  : AnyRecord
export type FunctionName<DB> = keyof Functions<DB> & string
export type ArgsOf<DB, F extends string> = F extends keyof Functions<DB>
  ? Functions<DB>[F] extends { Args: infer A } ? A : AnyRecord
  : AnyRecord
export type ReturnsOf<DB, F extends string> = F extends keyof Functions<DB>
  ? Functions<DB>[F] extends { Returns: infer R } ? R : unknown
  : unknown

export type Count = 'exact' | 'planned' | 'estimated'

export type FilterOperator =
  | 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte' | 'like' | 'ilike' | 'match' | 'imatch'
  | 'in' | 'is' | 'isdistinct' | 'cs' | 'cd' | 'ov' | 'sl' | 'sr' | 'nxr' | 'nxl' | 'adj'
  | 'fts' | 'plfts' | 'phfts' | 'wfts'

/** Entry point: `data.from('todos')`, `data.rpc('fn', args)`. */
export class DataClient<DB = GenericDatabase> {
  constructor(
    /** The server's `/data/v1` URL. */
    readonly url: string,
    private readonly fetcher: Fetch,
  ) {}

  from<T extends TableName<DB>>(table: T): QueryBuilder<RowOf<DB, T>, InsertOf<DB, T>, UpdateOf<DB, T>> {
    return new QueryBuilder(`${this.url}/${encodeURIComponent(table)}`, this.fetcher)
  }

  /**
   * Calls a function. `get: true` calls it with GET (read-only functions), `head: true` asks
   * only for the count. Functions returning rows take filters and modifiers like a table.
   */
  rpc<F extends FunctionName<DB>>(
    fn: F,
    args: ArgsOf<DB, F> | AnyRecord = {},
    options: { get?: boolean; head?: boolean; count?: Count } = {},
  ): FilterBuilder<AnyRecord, ReturnsOf<DB, F>> {
    const url = new URL(`${this.url}/rpc/${encodeURIComponent(fn)}`)
    let method: string = 'POST'
    let body: unknown = args
    if (options.get || options.head) {
      method = options.head ? 'HEAD' : 'GET'
      for (const [k, v] of Object.entries(args as AnyRecord)) {
        if (v !== undefined) url.searchParams.append(k, String(v))
      }
      body = undefined
    }
    const b = new FilterBuilder<AnyRecord, ReturnsOf<DB, F>>(url, method, this.fetcher, body)
    if (options.count) b.prefer(`count=${options.count}`)
    return b
  }
}

export class QueryBuilder<Row, Insert = Partial<Row>, Update = Partial<Row>> {
  constructor(
    private readonly url: string,
    private readonly fetcher: Fetch,
  ) {}

  /** Reads rows: `select('id, title, author:authors(name)')`. */
  select(columns = '*', options: { count?: Count; head?: boolean } = {}): FilterBuilder<Row, Row[]> {
    const url = new URL(this.url)
    url.searchParams.set('select', cleanColumns(columns))
    const b = new FilterBuilder<Row, Row[]>(url, options.head ? 'HEAD' : 'GET', this.fetcher)
    if (options.count) b.prefer(`count=${options.count}`)
    return b
  }

  /**
   * Inserts one row or many. Keys absent from a row take the column default unless
   * `defaultToNull` (PostgREST's behaviour for bulk inserts: NULL).
   */
  insert(
    values: Insert | Insert[],
    options: { count?: Count; defaultToNull?: boolean } = {},
  ): FilterBuilder<Row, null> {
    const b = new FilterBuilder<Row, null>(new URL(this.url), 'POST', this.fetcher, values)
    if (!options.defaultToNull) b.prefer('missing=default')
    if (options.count) b.prefer(`count=${options.count}`)
    return b
  }

  /** Inserts, or on a conflict with `onConflict` (default: the primary key) updates or skips. */
  upsert(
    values: Insert | Insert[],
    options: { onConflict?: string; ignoreDuplicates?: boolean; count?: Count; defaultToNull?: boolean } = {},
  ): FilterBuilder<Row, null> {
    const url = new URL(this.url)
    if (options.onConflict) url.searchParams.set('on_conflict', options.onConflict)
    const b = new FilterBuilder<Row, null>(url, 'POST', this.fetcher, values)
    b.prefer(`resolution=${options.ignoreDuplicates ? 'ignore' : 'merge'}-duplicates`)
    if (!options.defaultToNull) b.prefer('missing=default')
    if (options.count) b.prefer(`count=${options.count}`)
    return b
  }

  /** Updates the rows the filters match (the server refuses an update without a filter). */
  update(values: Update, options: { count?: Count } = {}): FilterBuilder<Row, null> {
    const b = new FilterBuilder<Row, null>(new URL(this.url), 'PATCH', this.fetcher, values)
    if (options.count) b.prefer(`count=${options.count}`)
    return b
  }

  /** Deletes the rows the filters match (the server refuses a delete without a filter). */
  delete(options: { count?: Count } = {}): FilterBuilder<Row, null> {
    const b = new FilterBuilder<Row, null>(new URL(this.url), 'DELETE', this.fetcher)
    if (options.count) b.prefer(`count=${options.count}`)
    return b
  }
}

/** A value in a filter: quoted when PostgREST's grammar would otherwise split it. */
function quoteItem(v: unknown): string {
  const s = v === null ? 'null' : String(v)
  return /[,()":\\]/.test(s) ? `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"` : s
}

function cleanColumns(columns: string): string {
  // Whitespace outside double quotes carries no meaning.
  let quoted = false
  let out = ''
  for (const ch of columns) {
    if (ch === '"') quoted = !quoted
    if (!quoted && /\s/.test(ch)) continue
    out += ch
  }
  return out
}

function arrayLiteral(values: unknown[]): string {
  return `{${values.map(quoteItem).join(',')}}`
}

/** Filters, modifiers and execution: awaiting the builder sends the request. */
export class FilterBuilder<Row, Result> implements PromiseLike<ReactorResponse<Result>> {
  private headers: Record<string, string> = {}
  private preferences: string[] = []
  private mode: 'many' | 'single' | 'maybeSingle' | 'csv' = 'many'

  constructor(
    private readonly url: URL,
    private readonly method: string,
    private readonly fetcher: Fetch,
    private readonly body?: unknown,
  ) {}

  /** @internal */
  prefer(preference: string): this {
    this.preferences.push(preference)
    return this
  }

  private key(column: string, referencedTable?: string): string {
    return referencedTable ? `${referencedTable}.${column}` : column
  }

  /** Any operator, written as PostgREST writes it: `filter('id', 'in', '(1,2)')`. */
  filter(column: keyof Row & string | string, operator: FilterOperator | `not.${FilterOperator}`, value: unknown): this {
    this.url.searchParams.append(column, `${operator}.${value}`)
    return this
  }

  eq(column: keyof Row & string | string, value: unknown): this { return this.filter(column, 'eq', value) }
  neq(column: keyof Row & string | string, value: unknown): this { return this.filter(column, 'neq', value) }
  gt(column: keyof Row & string | string, value: unknown): this { return this.filter(column, 'gt', value) }
  gte(column: keyof Row & string | string, value: unknown): this { return this.filter(column, 'gte', value) }
  lt(column: keyof Row & string | string, value: unknown): this { return this.filter(column, 'lt', value) }
  lte(column: keyof Row & string | string, value: unknown): this { return this.filter(column, 'lte', value) }
  like(column: keyof Row & string | string, pattern: string): this { return this.filter(column, 'like', pattern) }
  ilike(column: keyof Row & string | string, pattern: string): this { return this.filter(column, 'ilike', pattern) }
  likeAnyOf(column: keyof Row & string | string, patterns: string[]): this {
    this.url.searchParams.append(column, `like(any).${arrayLiteral(patterns)}`)
    return this
  }
  likeAllOf(column: keyof Row & string | string, patterns: string[]): this {
    this.url.searchParams.append(column, `like(all).${arrayLiteral(patterns)}`)
    return this
  }
  /** POSIX regular expression (`~`); `imatch` ignores case. */
  regex(column: keyof Row & string | string, pattern: string, options: { ignoreCase?: boolean } = {}): this {
    return this.filter(column, options.ignoreCase ? 'imatch' : 'match', pattern)
  }
  is(column: keyof Row & string | string, value: null | boolean | 'unknown' | 'not_null'): this {
    return this.filter(column, 'is', value)
  }
  isDistinct(column: keyof Row & string | string, value: unknown): this { return this.filter(column, 'isdistinct', value) }
  in(column: keyof Row & string | string, values: readonly unknown[]): this {
    this.url.searchParams.append(column, `in.(${values.map(quoteItem).join(',')})`)
    return this
  }
  /** Array or JSON containment (`@>`); a string is passed as is (a range). */
  contains(column: keyof Row & string | string, value: unknown[] | AnyRecord | string): this {
    return this.filter(column, 'cs', containment(value))
  }
  containedBy(column: keyof Row & string | string, value: unknown[] | AnyRecord | string): this {
    return this.filter(column, 'cd', containment(value))
  }
  overlaps(column: keyof Row & string | string, value: unknown[] | string): this {
    return this.filter(column, 'ov', containment(value))
  }
  rangeLt(column: keyof Row & string | string, range: string): this { return this.filter(column, 'sl', range) }
  rangeGt(column: keyof Row & string | string, range: string): this { return this.filter(column, 'sr', range) }
  rangeGte(column: keyof Row & string | string, range: string): this { return this.filter(column, 'nxl', range) }
  rangeLte(column: keyof Row & string | string, range: string): this { return this.filter(column, 'nxr', range) }
  rangeAdjacent(column: keyof Row & string | string, range: string): this { return this.filter(column, 'adj', range) }
  textSearch(
    column: keyof Row & string | string,
    query: string,
    options: { config?: string; type?: 'plain' | 'phrase' | 'websearch' } = {},
  ): this {
    const op =
      options.type === 'plain' ? 'plfts'
        : options.type === 'phrase' ? 'phfts'
          : options.type === 'websearch' ? 'wfts'
            : 'fts'
    const config = options.config ? `(${options.config})` : ''
    this.url.searchParams.append(column, `${op}${config}.${query}`)
    return this
  }
  /** Equality on every key of `query`. */
  match(query: Partial<Row> | AnyRecord): this {
    for (const [k, v] of Object.entries(query)) this.eq(k, v)
    return this
  }
  /** `not('author_id', 'is', null)`. */
  not(column: keyof Row & string | string, operator: FilterOperator, value: unknown): this {
    this.url.searchParams.append(column, `not.${operator}.${value}`)
    return this
  }
  /** `or('id.eq.1,title.ilike.*x*')`, optionally on an embedded resource. */
  or(filters: string, options: { referencedTable?: string } = {}): this {
    this.url.searchParams.append(this.key('or', options.referencedTable), `(${filters})`)
    return this
  }

  /** After a write: return the written rows (with `select`'s columns and embeds). */
  select(columns = '*'): FilterBuilder<Row, Row[]> {
    this.url.searchParams.set('select', cleanColumns(columns))
    this.prefer('return=representation')
    return this as unknown as FilterBuilder<Row, Row[]>
  }

  order(
    column: keyof Row & string | string,
    options: { ascending?: boolean; nullsFirst?: boolean; referencedTable?: string } = {},
  ): this {
    const key = this.key('order', options.referencedTable)
    let term = `${column}.${options.ascending === false ? 'desc' : 'asc'}`
    if (options.nullsFirst !== undefined) term += options.nullsFirst ? '.nullsfirst' : '.nullslast'
    const existing = this.url.searchParams.get(key)
    this.url.searchParams.set(key, existing ? `${existing},${term}` : term)
    return this
  }

  limit(count: number, options: { referencedTable?: string } = {}): this {
    this.url.searchParams.set(this.key('limit', options.referencedTable), String(count))
    return this
  }

  /** Rows `from` to `to`, both included (0-based). */
  range(from: number, to: number, options: { referencedTable?: string } = {}): this {
    this.url.searchParams.set(this.key('offset', options.referencedTable), String(from))
    this.url.searchParams.set(this.key('limit', options.referencedTable), String(to - from + 1))
    return this
  }

  /** Exactly one row as an object; anything else is an error (PGRST116). */
  single(): FilterBuilder<Row, Result extends (infer R)[] ? R : Result> {
    this.mode = 'single'
    this.headers['accept'] = 'application/vnd.pgrst.object+json'
    return this as never
  }

  /** One row as an object, or `null` for none; more than one is an error. */
  maybeSingle(): FilterBuilder<Row, Result extends (infer R)[] ? R : Result> {
    this.mode = 'maybeSingle'
    return this as never
  }

  /** The rows as CSV text. */
  csv(): FilterBuilder<Row, string> {
    this.mode = 'csv'
    this.headers['accept'] = 'text/csv'
    return this as never
  }

  /** Overrides the result type (for `select` strings with embeds or renames). */
  returns<T>(): FilterBuilder<Row, T> {
    return this as never
  }

  then<A = ReactorResponse<Result>, B = never>(
    onfulfilled?: ((value: ReactorResponse<Result>) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): PromiseLike<A | B> {
    return this.execute().then(onfulfilled, onrejected)
  }

  private async execute(): Promise<ReactorResponse<Result>> {
    const headers: Record<string, string> = { ...this.headers }
    if (this.preferences.length) headers['prefer'] = this.preferences.join(',')
    let body: string | undefined
    if (this.body !== undefined) {
      headers['content-type'] = 'application/json'
      body = JSON.stringify(this.body)
    }
    let res: Response
    try {
      res = await this.fetcher(this.url.toString(), { method: this.method, headers, body })
    } catch (e) {
      return failure(0, 'FETCH_ERROR', e instanceof Error ? e.message : String(e))
    }
    const text = this.method === 'HEAD' ? '' : await res.text()
    const range = res.headers.get('content-range')
    const total = range?.split('/')[1]
    const count = total && total !== '*' ? Number(total) : null
    if (!res.ok) {
      try {
        const e = JSON.parse(text) as Partial<ReactorError>
        return {
          data: null,
          count: null,
          status: res.status,
          error: {
            code: e.code ?? String(res.status),
            message: e.message ?? res.statusText,
            details: e.details ?? null,
            hint: e.hint ?? null,
            status: res.status,
          },
        }
      } catch {
        return failure(res.status, String(res.status), text || res.statusText)
      }
    }
    if (this.mode === 'csv') return { data: text as Result, error: null, count, status: res.status }
    let data: unknown = text ? JSON.parse(text) : null
    if (this.mode === 'maybeSingle' && Array.isArray(data)) {
      if (data.length > 1) {
        return failure(406, 'PGRST116', 'Cannot coerce the result to a single JSON object', `The result contains ${data.length} rows`)
      }
      data = data[0] ?? null
    }
    return { data: data as Result, error: null, count, status: res.status }
  }
}

function containment(value: unknown[] | AnyRecord | string): string {
  if (typeof value === 'string') return value
  if (Array.isArray(value)) return arrayLiteral(value)
  return JSON.stringify(value)
}

function failure<T>(status: number, code: string, message: string, details: string | null = null): ReactorResponse<T> {
  return { data: null, count: null, status, error: { code, message, details, hint: null, status } }
}

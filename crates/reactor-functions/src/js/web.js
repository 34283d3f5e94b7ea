// The Web APIs a handler sees, built on a handful of host functions. Evaluated as a script in
// every fresh context; its value is the `serve` function the engine calls once per invocation.
// The host object is reachable only from this closure: handlers cannot call it.
export default function (host) {
  "use strict";
  const define = (name, value) =>
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });

  // ---- console -------------------------------------------------------------------------
  const inspect = (value, depth) => {
    if (typeof value === "string") return depth === 0 ? value : JSON.stringify(value);
    if (value instanceof Error) return value.stack ? `${value.name}: ${value.message}\n${value.stack}` : `${value.name}: ${value.message}`;
    if (typeof value === "function") return `[Function ${value.name || "(anonymous)"}]`;
    if (typeof value === "bigint") return `${value}n`;
    if (typeof value === "symbol" || value === undefined || value === null) return String(value);
    if (typeof value !== "object") return String(value);
    if (depth > 3) return Array.isArray(value) ? "[Array]" : "[Object]";
    try {
      if (Array.isArray(value)) return `[ ${value.map((v) => inspect(v, depth + 1)).join(", ")} ]`;
      if (value instanceof Map) return `Map(${value.size}) { ${[...value].map(([k, v]) => `${inspect(k, depth + 1)} => ${inspect(v, depth + 1)}`).join(", ")} }`;
      if (value instanceof Set) return `Set(${value.size}) { ${[...value].map((v) => inspect(v, depth + 1)).join(", ")} }`;
      const entries = Object.keys(value).map((k) => `${k}: ${inspect(value[k], depth + 1)}`);
      const name = value.constructor && value.constructor !== Object ? `${value.constructor.name} ` : "";
      return `${name}{ ${entries.join(", ")} }`;
    } catch {
      return "[Object]";
    }
  };
  const format = (args) => {
    if (typeof args[0] === "string" && /%[sdifoOj%]/.test(args[0])) {
      let i = 1;
      const head = args[0].replace(/%([sdifoOj%])/g, (m, c) => {
        if (c === "%") return "%";
        if (i >= args.length) return m;
        const v = args[i++];
        if (c === "s") return typeof v === "string" ? v : inspect(v, 1);
        if (c === "d" || c === "i") return String(c === "i" ? Math.trunc(Number(v)) : Number(v));
        if (c === "f") return String(Number(v));
        return inspect(v, 1);
      });
      return [head, ...args.slice(i).map((v) => inspect(v, 0))].join(" ");
    }
    return args.map((v) => inspect(v, 0)).join(" ");
  };
  const counts = new Map();
  const timers = new Map();
  const log = (level) => (...args) => host.log(level, format(args));
  define("console", {
    log: log("info"),
    info: log("info"),
    debug: log("debug"),
    trace: log("debug"),
    warn: log("warn"),
    error: log("error"),
    assert: (ok, ...args) => { if (!ok) host.log("error", "Assertion failed" + (args.length ? ": " + format(args) : "")); },
    count: (label = "default") => { const n = (counts.get(label) || 0) + 1; counts.set(label, n); host.log("info", `${label}: ${n}`); },
    time: (label = "default") => { timers.set(label, Date.now()); },
    timeEnd: (label = "default") => { const t = timers.get(label); timers.delete(label); host.log("info", `${label}: ${t === undefined ? 0 : Date.now() - t}ms`); },
  });

  // ---- encoding ------------------------------------------------------------------------
  const toBytes = (data) => {
    if (data instanceof Uint8Array) return data;
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    throw new TypeError("expected an ArrayBuffer or a typed array");
  };
  class TextEncoder {
    get encoding() { return "utf-8"; }
    encode(input = "") { return host.utf8Encode(String(input)); }
    encodeInto(input, dest) {
      const bytes = host.utf8Encode(String(input));
      const n = Math.min(bytes.length, dest.length);
      dest.set(bytes.subarray(0, n));
      return { read: input.length, written: n };
    }
  }
  class TextDecoder {
    constructor(label = "utf-8", options = {}) {
      const l = String(label).toLowerCase();
      if (l !== "utf-8" && l !== "utf8") throw new RangeError(`The encoding "${label}" is not supported`);
      this.fatal = !!options.fatal;
      this.ignoreBOM = !!options.ignoreBOM;
    }
    get encoding() { return "utf-8"; }
    decode(input) {
      if (input === undefined) return "";
      return host.utf8Decode(toBytes(input), this.fatal, this.ignoreBOM);
    }
  }
  define("TextEncoder", TextEncoder);
  define("TextDecoder", TextDecoder);
  const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  define("btoa", (input) => {
    const s = String(input);
    let out = "";
    for (let i = 0; i < s.length; i += 3) {
      const a = s.charCodeAt(i), b = s.charCodeAt(i + 1), c = s.charCodeAt(i + 2);
      if (a > 255 || b > 255 || c > 255) throw new DOMException("The string contains characters outside of the Latin1 range", "InvalidCharacterError");
      const n = (a << 16) | ((b || 0) << 8) | (c || 0);
      out += B64[n >> 18] + B64[(n >> 12) & 63] + (i + 1 < s.length ? B64[(n >> 6) & 63] : "=") + (i + 2 < s.length ? B64[n & 63] : "=");
    }
    return out;
  });
  define("atob", (input) => {
    let s = String(input).replace(/[\t\n\f\r ]/g, "");
    if (s.length % 4 === 0) s = s.replace(/==?$/, "");
    if (s.length % 4 === 1 || /[^A-Za-z0-9+/]/.test(s)) throw new DOMException("The string to be decoded is not correctly encoded", "InvalidCharacterError");
    let out = "", bits = 0, acc = 0;
    for (let i = 0; i < s.length; i++) {
      acc = (acc << 6) | B64.indexOf(s[i]);
      bits += 6;
      if (bits >= 8) { bits -= 8; out += String.fromCharCode((acc >> bits) & 255); }
    }
    return out;
  });

  // ---- crypto --------------------------------------------------------------------------
  define("crypto", {
    randomUUID: () => host.randomUUID(),
    getRandomValues: (array) => {
      if (!ArrayBuffer.isView(array) || array instanceof Float32Array || array instanceof Float64Array) throw new TypeError("getRandomValues expects an integer typed array");
      if (array.byteLength > 65536) throw new DOMException("The requested length exceeds 65,536 bytes", "QuotaExceededError");
      new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(host.randomBytes(array.byteLength));
      return array;
    },
  });

  // ---- timers --------------------------------------------------------------------------
  let nextTimer = 1;
  const pending = new Map();
  const addTimer = (fn, ms, args, repeat) => {
    if (typeof fn !== "function") throw new TypeError("the callback must be a function");
    const id = nextTimer++;
    const delay = Math.max(0, Number(ms) || 0);
    pending.set(id, { fn, args, at: Date.now() + delay, every: repeat ? Math.max(1, delay) : 0 });
    return id;
  };
  define("setTimeout", (fn, ms, ...args) => addTimer(fn, ms, args, false));
  define("setInterval", (fn, ms, ...args) => addTimer(fn, ms, args, true));
  define("clearTimeout", (id) => { pending.delete(id); });
  define("clearInterval", (id) => { pending.delete(id); });
  define("queueMicrotask", (fn) => { Promise.resolve().then(fn); });
  // Called by the engine between turns: runs due timers, returns ms until the next (or -1).
  const runTimers = () => {
    const now = Date.now();
    for (const [id, t] of [...pending]) {
      if (t.at > now || !pending.has(id)) continue;
      if (t.every) t.at = now + t.every; else pending.delete(id);
      t.fn(...t.args);
    }
    let next = -1;
    for (const t of pending.values()) {
      const wait = Math.max(0, t.at - Date.now());
      if (next < 0 || wait < next) next = wait;
    }
    return next;
  };

  // ---- URLSearchParams and URL -----------------------------------------------------------
  const formEncode = (s) => encodeURIComponent(s).replace(/%20/g, "+").replace(/[!'()~]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  const formDecode = (s) => { try { return decodeURIComponent(s.replace(/\+/g, " ")); } catch { return s; } };
  class URLSearchParams {
    #list = [];
    #url = null;
    constructor(init = "") {
      if (typeof init === "string") this.#parse(init);
      else if (init instanceof URLSearchParams) this.#list = init.#list.map(([k, v]) => [k, v]);
      else if (init && typeof init[Symbol.iterator] === "function") {
        for (const pair of init) {
          const p = [...pair];
          if (p.length !== 2) throw new TypeError("each pair must have exactly two items");
          this.#list.push([String(p[0]), String(p[1])]);
        }
      } else if (init && typeof init === "object") {
        for (const k of Object.keys(init)) this.#list.push([k, String(init[k])]);
      }
    }
    #parse(s) {
      this.#list = [];
      for (const part of String(s).replace(/^\?/, "").split("&")) {
        if (!part) continue;
        const i = part.indexOf("=");
        this.#list.push(i < 0 ? [formDecode(part), ""] : [formDecode(part.slice(0, i)), formDecode(part.slice(i + 1))]);
      }
    }
    static _attach(params, url) { params.#url = url; }
    static _reset(params, query) { params.#parse(query); }
    #update() { if (this.#url) this.#url._setSearchFromParams(this.toString()); }
    get size() { return this.#list.length; }
    append(k, v) { this.#list.push([String(k), String(v)]); this.#update(); }
    delete(k, v) { this.#list = this.#list.filter(([a, b]) => a !== String(k) || (v !== undefined && b !== String(v))); this.#update(); }
    get(k) { const e = this.#list.find(([a]) => a === String(k)); return e ? e[1] : null; }
    getAll(k) { return this.#list.filter(([a]) => a === String(k)).map(([, b]) => b); }
    has(k, v) { return this.#list.some(([a, b]) => a === String(k) && (v === undefined || b === String(v))); }
    set(k, v) {
      const key = String(k);
      const i = this.#list.findIndex(([a]) => a === key);
      if (i < 0) this.#list.push([key, String(v)]);
      else { this.#list[i][1] = String(v); this.#list = this.#list.filter(([a], j) => a !== key || j === i); }
      this.#update();
    }
    sort() { this.#list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)); this.#update(); }
    forEach(fn, thisArg) { for (const [k, v] of this.#list) fn.call(thisArg, v, k, this); }
    *entries() { for (const [k, v] of this.#list) yield [k, v]; }
    *keys() { for (const [k] of this.#list) yield k; }
    *values() { for (const [, v] of this.#list) yield v; }
    [Symbol.iterator]() { return this.entries(); }
    toString() { return this.#list.map(([k, v]) => formEncode(k) + "=" + formEncode(v)).join("&"); }
  }
  define("URLSearchParams", URLSearchParams);

  // Parts as the host returns them: href, origin, protocol, username, password, host,
  // hostname, port, pathname, search, hash.
  class URL {
    #parts;
    #params;
    constructor(input, base) {
      const parts = host.urlParse(String(input), base === undefined ? null : String(base));
      if (!parts) throw new TypeError(`Invalid URL: ${input}`);
      this.#parts = parts;
      this.#params = new URLSearchParams(parts[9]);
      URLSearchParams._attach(this.#params, this);
    }
    static canParse(input, base) { return !!host.urlParse(String(input), base === undefined ? null : String(base)); }
    static parse(input, base) { try { return new URL(input, base); } catch { return null; } }
    #set(part, value) {
      const parts = host.urlSet(this.#parts[0], part, String(value));
      if (!parts) throw new TypeError(`Invalid URL ${part}: ${value}`);
      this.#parts = parts;
      if (part !== "search") URLSearchParams._reset(this.#params, parts[9]);
    }
    _setSearchFromParams(query) { this.#set("search", query); }
    get href() { return this.#parts[0]; }
    set href(v) { this.#set("href", v); URLSearchParams._reset(this.#params, this.#parts[9]); }
    get origin() { return this.#parts[1]; }
    get protocol() { return this.#parts[2]; }
    set protocol(v) { this.#set("protocol", v); }
    get username() { return this.#parts[3]; }
    set username(v) { this.#set("username", v); }
    get password() { return this.#parts[4]; }
    set password(v) { this.#set("password", v); }
    get host() { return this.#parts[5]; }
    set host(v) { this.#set("host", v); }
    get hostname() { return this.#parts[6]; }
    set hostname(v) { this.#set("hostname", v); }
    get port() { return this.#parts[7]; }
    set port(v) { this.#set("port", v); }
    get pathname() { return this.#parts[8]; }
    set pathname(v) { this.#set("pathname", v); }
    get search() { return this.#parts[9]; }
    set search(v) { this.#set("search", v); URLSearchParams._reset(this.#params, this.#parts[9]); }
    get hash() { return this.#parts[10]; }
    set hash(v) { this.#set("hash", v); }
    get searchParams() { return this.#params; }
    toString() { return this.#parts[0]; }
    toJSON() { return this.#parts[0]; }
  }
  define("URL", URL);

  // ---- Headers -------------------------------------------------------------------------
  const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
  // Names seen valid, lowercased: handlers use the same few names over and over.
  const knownNames = new Map();
  const headerName = (name) => {
    const n = String(name);
    const known = knownNames.get(n);
    if (known !== undefined) return known;
    if (!TOKEN.test(n)) throw new TypeError(`Invalid header name: ${n}`);
    const lower = n.toLowerCase();
    if (knownNames.size < 256) knownNames.set(n, lower);
    return lower;
  };
  const isSpace = (c) => c === 32 || c === 9 || c === 10 || c === 13;
  const headerValue = (value) => {
    let v = String(value);
    if (v.length && (isSpace(v.charCodeAt(0)) || isSpace(v.charCodeAt(v.length - 1)))) v = v.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "");
    if (v.indexOf("\r") >= 0 || v.indexOf("\n") >= 0 || v.indexOf("\0") >= 0) throw new TypeError("Invalid header value");
    return v;
  };
  class Headers {
    #list = [];
    constructor(init) {
      if (init instanceof Headers) this.#list = init.#list.map(([k, v]) => [k, v]);
      else if (init && typeof init[Symbol.iterator] === "function") {
        for (const pair of init) {
          const p = [...pair];
          if (p.length !== 2) throw new TypeError("each header must be a [name, value] pair");
          this.append(p[0], p[1]);
        }
      } else if (init && typeof init === "object") {
        for (const k of Object.keys(init)) this.append(k, init[k]);
      }
    }
    append(name, value) { this.#list.push([headerName(name), headerValue(value)]); }
    delete(name) { const n = headerName(name); this.#list = this.#list.filter(([k]) => k !== n); }
    get(name) {
      const n = headerName(name);
      const values = this.#list.filter(([k]) => k === n).map(([, v]) => v);
      return values.length ? values.join(", ") : null;
    }
    getSetCookie() { return this.#list.filter(([k]) => k === "set-cookie").map(([, v]) => v); }
    // Headers the server already parsed: valid and lowercase, so not checked again.
    static _trusted(pairs) { const h = new Headers(); h.#list = pairs; return h; }
    has(name) { const n = headerName(name); return this.#list.some(([k]) => k === n); }
    set(name, value) {
      const n = headerName(name);
      const v = headerValue(value);
      const i = this.#list.findIndex(([k]) => k === n);
      if (i < 0) this.#list.push([n, v]);
      else { this.#list[i][1] = v; this.#list = this.#list.filter(([k], j) => k !== n || j === i); }
    }
    *entries() {
      const names = [...new Set(this.#list.map(([k]) => k))].sort();
      for (const n of names) {
        if (n === "set-cookie") for (const v of this.getSetCookie()) yield [n, v];
        else yield [n, this.get(n)];
      }
    }
    *keys() { for (const [k] of this.entries()) yield k; }
    *values() { for (const [, v] of this.entries()) yield v; }
    forEach(fn, thisArg) { for (const [k, v] of this.entries()) fn.call(thisArg, v, k, this); }
    [Symbol.iterator]() { return this.entries(); }
    static _raw(h) { return h.#list; }
  }
  define("Headers", Headers);

  // ---- ReadableStream (the subset response bodies need) ----------------------------------
  class ReadableStreamDefaultController {
    #stream;
    constructor(stream) { this.#stream = stream; }
    get desiredSize() { return this.#stream._state === "readable" ? Math.max(0, 1 - this.#stream._queue.length) : 0; }
    enqueue(chunk) {
      if (this.#stream._state !== "readable" || this.#stream._closeRequested) throw new TypeError("the stream is closed");
      this.#stream._push({ value: chunk, done: false });
    }
    close() {
      if (this.#stream._closeRequested) throw new TypeError("the stream is already closed");
      this.#stream._closeRequested = true;
      this.#stream._push({ value: undefined, done: true });
    }
    error(e) { this.#stream._fail(e); }
  }
  class ReadableStream {
    constructor(source = {}) {
      this._queue = [];
      this._waiting = [];
      this._state = "readable";
      this._closeRequested = false;
      this._locked = false;
      this._source = source;
      this._pulling = false;
      this._controller = new ReadableStreamDefaultController(this);
      this._started = Promise.resolve(source.start ? source.start(this._controller) : undefined).catch((e) => this._fail(e));
    }
    static from(iterable) {
      const it = iterable[Symbol.asyncIterator] ? iterable[Symbol.asyncIterator]() : iterable[Symbol.iterator]();
      return new ReadableStream({
        async pull(c) { const r = await it.next(); if (r.done) c.close(); else c.enqueue(r.value); },
      });
    }
    get locked() { return this._locked; }
    _push(item) {
      const waiter = this._waiting.shift();
      if (waiter) waiter.resolve(item); else this._queue.push(item);
      if (item.done) this._state = "closed";
    }
    _fail(e) {
      if (this._state === "errored") return;
      this._state = "errored";
      this._error = e;
      for (const w of this._waiting.splice(0)) w.reject(e);
    }
    async _pull() {
      if (this._pulling || !this._source.pull || this._closeRequested || this._state !== "readable") return;
      this._pulling = true;
      try { await this._started; await this._source.pull(this._controller); } catch (e) { this._fail(e); } finally { this._pulling = false; }
    }
    _read() {
      if (this._queue.length) return Promise.resolve(this._queue.shift());
      if (this._state === "errored") return Promise.reject(this._error);
      if (this._state === "closed") return Promise.resolve({ value: undefined, done: true });
      const p = new Promise((resolve, reject) => this._waiting.push({ resolve, reject }));
      this._started.then(() => this._pull());
      return p;
    }
    getReader() {
      if (this._locked) throw new TypeError("the stream is locked");
      this._locked = true;
      const stream = this;
      return {
        read: () => stream._read(),
        releaseLock: () => { stream._locked = false; },
        cancel: async (reason) => { stream._state = "closed"; if (stream._source.cancel) await stream._source.cancel(reason); },
        get closed() { return stream._started; },
      };
    }
    async cancel(reason) { this._state = "closed"; if (this._source.cancel) await this._source.cancel(reason); }
    async *[Symbol.asyncIterator]() {
      const reader = this.getReader();
      try {
        for (;;) { const { value, done } = await reader.read(); if (done) return; yield value; }
      } finally { reader.releaseLock(); }
    }
  }
  define("ReadableStream", ReadableStream);

  // ---- Body, Request, Response -----------------------------------------------------------
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  // Normalises a body init to bytes or a stream, and the content type it implies.
  const extract = (body) => {
    if (body === undefined || body === null) return { bytes: null, stream: null, type: null };
    if (typeof body === "string") return { bytes: encoder.encode(body), stream: null, type: "text/plain;charset=UTF-8" };
    if (body instanceof URLSearchParams) return { bytes: encoder.encode(body.toString()), stream: null, type: "application/x-www-form-urlencoded;charset=UTF-8" };
    if (body instanceof ReadableStream) return { bytes: null, stream: body, type: null };
    if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return { bytes: toBytes(body).slice(), stream: null, type: null };
    return { bytes: encoder.encode(String(body)), stream: null, type: "text/plain;charset=UTF-8" };
  };
  const readAll = async (stream) => {
    const chunks = [];
    let total = 0;
    for await (const chunk of stream) {
      const bytes = typeof chunk === "string" ? encoder.encode(chunk) : toBytes(chunk);
      chunks.push(bytes);
      total += bytes.length;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) { out.set(c, at); at += c.length; }
    return out;
  };
  class Body {
    _initBody(body, headers) {
      const { bytes, stream, type } = extract(body);
      this._bytes = bytes;
      this._stream = stream;
      this._used = false;
      if (type && !headers.has("content-type")) headers.set("content-type", type);
    }
    get bodyUsed() { return this._used; }
    get body() {
      if (this._stream) return this._stream;
      if (this._bytes === null) return null;
      const bytes = this._bytes;
      this._stream = new ReadableStream({ start(c) { c.enqueue(bytes); c.close(); } });
      this._bytes = null;
      return this._stream;
    }
    async _consume() {
      if (this._used) throw new TypeError("Body has already been consumed");
      this._used = true;
      if (this._stream) return readAll(this._stream);
      return this._bytes || new Uint8Array(0);
    }
    async arrayBuffer() { const b = await this._consume(); return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength); }
    async bytes() { return (await this._consume()).slice(); }
    async text() { return decoder.decode(await this._consume()); }
    async json() { return JSON.parse(await this.text()); }
    async formData() { throw new TypeError("formData() is not supported; read text() and use URLSearchParams"); }
  }
  const METHODS = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"];
  class Request extends Body {
    constructor(input, init = {}) {
      super();
      const from = input instanceof Request ? input : null;
      this.url = from ? from.url : new URL(String(input)).href;
      let method = init.method !== undefined ? String(init.method) : from ? from.method : "GET";
      if (METHODS.includes(method.toUpperCase())) method = method.toUpperCase();
      this.method = method;
      this.headers = new Headers(init.headers !== undefined ? init.headers : from ? from.headers : undefined);
      this.redirect = init.redirect || (from ? from.redirect : "follow");
      this.signal = init.signal || (from ? from.signal : undefined);
      const body = init.body !== undefined ? init.body : from && !from._used ? (from._stream || from._bytes) : null;
      if (body !== null && body !== undefined && (this.method === "GET" || this.method === "HEAD")) throw new TypeError("Request with GET/HEAD method cannot have body");
      this._initBody(body, this.headers);
    }
    clone() {
      if (this._used) throw new TypeError("Body has already been consumed");
      return new Request(this, { body: this._bytes ? this._bytes.slice() : null });
    }
    // The incoming request, from what the server already parsed and checked.
    static _incoming(method, url, pairs, body) {
      const request = Object.create(Request.prototype);
      request.url = url;
      request.method = method;
      request.headers = Headers._trusted(pairs);
      request.redirect = "follow";
      request.signal = undefined;
      request._bytes = body && body.length ? body : null;
      request._stream = null;
      request._used = false;
      return request;
    }
  }
  define("Request", Request);
  const STATUS_TEXT = { 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable" };
  class Response extends Body {
    constructor(body = null, init = {}) {
      super();
      const status = init.status === undefined ? 200 : Number(init.status);
      if (!Number.isInteger(status) || status < 200 || status > 599) throw new RangeError(`Invalid status code: ${init.status}`);
      this.status = status;
      this.statusText = init.statusText !== undefined ? String(init.statusText) : STATUS_TEXT[status] || "";
      this.headers = new Headers(init.headers);
      this.type = "default";
      this.redirected = false;
      this.url = "";
      if (body !== null && [101, 204, 205, 304].includes(status)) throw new TypeError(`Response with status ${status} cannot have a body`);
      this._initBody(body, this.headers);
    }
    get ok() { return this.status >= 200 && this.status < 300; }
    static json(data, init = {}) {
      const headers = new Headers(init.headers);
      if (!headers.has("content-type")) headers.set("content-type", "application/json");
      return new Response(JSON.stringify(data), { ...init, headers });
    }
    static redirect(url, status = 302) {
      if (![301, 302, 303, 307, 308].includes(status)) throw new RangeError(`Invalid redirect status: ${status}`);
      return new Response(null, { status, headers: { location: new URL(String(url)).href } });
    }
    static error() { const r = new Response(null, { status: 500 }); r.type = "error"; return r; }
    clone() {
      if (this._used) throw new TypeError("Body has already been consumed");
      return new Response(this._bytes ? this._bytes.slice() : null, this);
    }
  }
  define("Response", Response);

  // ---- fetch -----------------------------------------------------------------------------
  // The server performs the request (with its allow-list, timeout and size cap); the answer
  // comes back through `complete`, called by the engine's event loop.
  let nextFetch = 1;
  const inflight = new Map();
  define("fetch", (input, init = {}) => {
    try {
      const req = input instanceof Request && Object.keys(init).length === 0 ? input : new Request(input, init);
      if (req._stream) return Promise.reject(new TypeError("fetch: a streamed request body is not supported; pass a string or bytes"));
      const id = nextFetch++;
      const redirect = init.redirect || req.redirect || "follow";
      return new Promise((resolve, reject) => {
        inflight.set(id, { resolve, reject });
        host.fetch(id, req.method, req.url, Headers._raw(req.headers).map(([k, v]) => [k, v]), req._bytes || new Uint8Array(0), String(redirect));
      });
    } catch (e) {
      return Promise.reject(e);
    }
  });
  const complete = (id, ok, status, statusTextOrError, headers, body, url) => {
    const waiting = inflight.get(id);
    if (!waiting) return;
    inflight.delete(id);
    if (!ok) {
      waiting.reject(new TypeError(`fetch failed: ${statusTextOrError}`));
      return;
    }
    const empty = [204, 205, 304].includes(status);
    const response = new Response(empty ? null : body, { status, statusText: statusTextOrError, headers });
    response.url = url;
    waiting.resolve(response);
  };

  // ---- the handler call ------------------------------------------------------------------
  // Runs one invocation: builds the Request, calls the module's default export, and reports
  // the Response to the host (head, then body bytes or stream chunks).
  const serve = async (exported, method, url, headers, body, env) => {
    let handler;
    if (typeof exported === "function") handler = (req) => exported(req, env, context);
    else if (exported && typeof exported.fetch === "function") handler = (req) => exported.fetch(req, env, context);
    else throw new TypeError("the module's default export must be a function (req) => Response, or an object with a fetch(req, env, ctx) method");
    const context = { waitUntil: (p) => { Promise.resolve(p).catch((e) => host.log("error", format(["waitUntil:", e]))); }, passThroughOnException() {} };
    const request = Request._incoming(method, url, headers, body);
    const response = await handler(request);
    if (!(response instanceof Response)) throw new TypeError(`the handler returned ${inspect(response, 1)}, not a Response`);
    const head = Headers._raw(response.headers).map(([k, v]) => [k, v]);
    if (response._stream) {
      host.head(response.status, head, null);
      const reader = response._stream.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        host.chunk(typeof value === "string" ? encoder.encode(value) : toBytes(value));
      }
    } else {
      host.head(response.status, head, response._bytes || new Uint8Array(0));
    }
  };
  return { serve, runTimers, complete };
}

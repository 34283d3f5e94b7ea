//! WASM handlers: a WASI preview 1 command module (`.wasm`, or `.wat` compiled on load) run
//! CGI-style — the request body on stdin, the request in CGI environment variables, the
//! response on stdout as `Status:`/header lines, a blank line, then the body.
//!
//! The WASI surface is Reactor's own and deliberately small: arguments, environment, stdin,
//! stdout, stderr, clocks, randomness and exit. There are no preopened directories and no
//! sockets, so a module has no file system and no network; every other WASI call answers
//! `ENOSYS`. Time is bounded by epoch interruption (a process-wide ticker), memory by the
//! store's limits; modules are compiled once and pre-linked, so an invocation is one
//! instantiation, into a slot of wasmtime's pooling allocator: memory and tables are mapped
//! once for the process and reused (a slot stays affine to the module it last held), never
//! mapped per request.
//!
//! WASI HTTP components are served by `component`, on this module's engine and pool.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{
    Caller, Config, Engine, Extern, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolConcurrencyLimitError, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder,
    Trap, Val, ValType,
};

use crate::js::{Host, JsError, JsLimits, JsRequest, Level};

const WASI: &str = "wasi_snapshot_preview1";

/// How often the epoch advances: the granularity of the time limit.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// WASM instances that may be alive at once in this process: the pooling allocator's slots
/// (core instances; a component takes one per core module inside it, and one component
/// slot). Each slot reserves address space, not memory (4 GiB plus guard pages for the
/// linear memory, which lets compiled code skip bounds checks); invocations beyond this
/// answer 503.
pub const INSTANCE_SLOTS: u32 = 512;

/// Bytes of each linear memory kept mapped when its slot is reused (zeroed by memset).
const KEEP_RESIDENT: usize = 256 * 1024;

/// Largest stdout a module may write (its response).
const MAX_OUTPUT: usize = 16 * 1024 * 1024;

// WASI errno values.
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ESPIPE: i32 = 70;

/// The shared engine of command modules and components, with epoch interruption (without it
/// there is no time limit, so no engine at all); its ticker thread starts with it.
pub(crate) fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(INSTANCE_SLOTS)
            .total_memories(INSTANCE_SLOTS)
            .total_tables(INSTANCE_SLOTS)
            .total_component_instances(INSTANCE_SLOTS)
            // Components run as async calls, each on a fiber stack from the pool.
            .total_stacks(INSTANCE_SLOTS)
            // A slot handed back is zeroed with memset up to these sizes instead of madvise:
            // the system call's TLB shootdown interrupted every core once per request, and
            // the next instance page-faulted the memory back in (a component's throughput:
            // 6.8k → 9.4k req/s, bench/README.md).
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT / 4);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            Engine::new(&config).map_err(|e| format!("the WASM engine cannot start: {e:#}"))?;
        let ticking = engine.clone();
        let started = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    ticking.increment_epoch();
                }
            });
        match started {
            Ok(_) => Ok(engine),
            Err(e) => Err(format!(
                "the WASM epoch ticker cannot start, so time limits could not hold: {e}"
            )),
        }
    });
    engine.as_ref().map_err(Clone::clone)
}

/// A compiled, pre-linked module.
pub struct WasmProgram {
    pre: InstancePre<State>,
    pub hash: String,
}

impl std::fmt::Debug for WasmProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmProgram")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// What one invocation's WASI calls read and write.
#[derive(Default)]
struct State {
    limits: StoreLimits,
    args: Vec<String>,
    env: Vec<String>,
    stdin: Vec<u8>,
    read: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// `proc_exit`, carried out of the module as an error.
#[derive(Debug)]
struct Exit(i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

impl WasmProgram {
    /// Compiles `bytes` (binary, or text when `text`) and links it against Reactor's WASI.
    pub fn compile(bytes: &[u8], text: bool, hash: String) -> Result<WasmProgram, String> {
        let binary = binary(bytes, text)?;
        let engine = engine()?;
        let module = Module::new(engine, &binary).map_err(|e| format!("{e:#}"))?;
        if module.get_export("_start").is_none() {
            return Err(
                "the module exports no `_start`: a WASI command module is expected (e.g. clang --target=wasm32-wasi)"
                    .into(),
            );
        }
        let mut linker = Linker::new(engine);
        wasi(&mut linker).map_err(|e| format!("{e:#}"))?;
        // Whatever else of WASI the module imports answers ENOSYS; any other import is an
        // error now (from `instantiate_pre`) rather than at the first request.
        stub_unknown_wasi(&mut linker, &module).map_err(|e| format!("{e:#}"))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| format!("{e:#}"))?;
        Ok(WasmProgram { pre, hash })
    }
}

/// The binary of a module or component given as `bytes`: WAT text is compiled when `text`.
pub fn binary(bytes: &[u8], text: bool) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    if text {
        wat::parse_bytes(bytes).map_err(|e| e.to_string())
    } else {
        Ok(std::borrow::Cow::Borrowed(bytes))
    }
}

/// Runs one invocation to completion on the current thread.
pub fn invoke(
    program: &WasmProgram,
    request: JsRequest,
    env: &BTreeMap<String, String>,
    limits: JsLimits,
    host: Rc<dyn Host>,
) -> Result<(), JsError> {
    let state = State {
        limits: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(1)
            .tables(4)
            .memories(1)
            .trap_on_grow_failure(true)
            .build(),
        args: vec!["handler".into()],
        env: cgi_environment(&request, env),
        stdin: request.body,
        read: 0,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let engine = engine().map_err(JsError::Engine)?;
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    let ticks = (limits.timeout.as_millis() / TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();

    // A full pool, or a trap in the module's start function, is classified below like a
    // trap in `_start`.
    let outcome = program.pre.instantiate(&mut store).and_then(|instance| {
        instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .and_then(|start| start.call(&mut store, ()))
    });
    let state = store.into_data();
    for line in String::from_utf8_lossy(&state.stderr).lines() {
        host.log(Level::Info, line);
    }
    let code = match outcome {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit(code)) => *code,
            None => return Err(failure(e, limits, "module")),
        },
    };
    if code != 0 {
        let tail: String = String::from_utf8_lossy(&state.stderr)
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        return Err(JsError::Threw(format!(
            "the module exited with code {code}: {tail}"
        )));
    }
    let (status, headers, body) = parse_cgi(state.stdout)?;
    host.head(status, headers, Some(body))
        .map_err(|_| JsError::Closed)
}

/// Why a module or component (`what`) ended without answering: the pool full, a limit it
/// hit (the epoch deadline, the memory cap), or its own trap.
pub(crate) fn failure(e: wasmtime::Error, limits: JsLimits, what: &str) -> JsError {
    if e.is::<PoolConcurrencyLimitError>() {
        return JsError::Saturated(INSTANCE_SLOTS);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => JsError::Timeout(limits.timeout),
        _ if format!("{e:#}").contains("forcing trap when growing memory") => {
            JsError::Memory(limits.memory_bytes)
        }
        _ => JsError::Threw(format!("the {what} trapped: {e:#}")),
    }
}

/// The request as CGI/1.1 meta-variables (RFC 3875), plus the project's secrets.
fn cgi_environment(request: &JsRequest, env: &BTreeMap<String, String>) -> Vec<String> {
    let url = url::Url::parse(&request.url).ok();
    let path = url.as_ref().map_or("/", |u| u.path());
    // `/fn/v1/<name>` is the script; the rest is PATH_INFO.
    let mut segments = path.splitn(5, '/');
    let script: Vec<&str> = segments.by_ref().take(4).collect();
    let path_info = segments
        .next()
        .map(|rest| format!("/{rest}"))
        .unwrap_or_default();
    let mut vars = vec![
        format!("GATEWAY_INTERFACE=CGI/1.1"),
        format!("SERVER_PROTOCOL=HTTP/1.1"),
        format!("REQUEST_METHOD={}", request.method),
        format!("SCRIPT_NAME={}", script.join("/")),
        format!("PATH_INFO={path_info}"),
        format!(
            "QUERY_STRING={}",
            url.as_ref().and_then(|u| u.query()).unwrap_or("")
        ),
        format!(
            "REQUEST_URI={}{}",
            path,
            url.as_ref()
                .and_then(|u| u.query())
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        ),
        format!("CONTENT_LENGTH={}", request.body.len()),
    ];
    for (name, value) in &request.headers {
        match name.as_str() {
            "content-type" => vars.push(format!("CONTENT_TYPE={value}")),
            "content-length" => {}
            _ => vars.push(format!(
                "HTTP_{}={value}",
                name.to_ascii_uppercase().replace('-', "_")
            )),
        }
    }
    vars.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    vars
}

/// A response as a module printed it: status, headers, body.
type CgiResponse = (u16, Vec<(String, String)>, Vec<u8>);

/// `Status: 201 Created` and header lines, a blank line, the body.
fn parse_cgi(stdout: Vec<u8>) -> Result<CgiResponse, JsError> {
    let split = stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let Some((head_end, body_start)) = split else {
        return Err(JsError::Threw(
            "the module's output has no header block: print `Content-Type: …`, a blank line, then the body".into(),
        ));
    };
    let head = String::from_utf8_lossy(&stdout[..head_end]).into_owned();
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            return Err(JsError::Threw(format!(
                "the module printed `{line}` among its headers"
            )));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        if name == "status" {
            status = value
                .split_whitespace()
                .next()
                .and_then(|code| code.parse().ok())
                .filter(|code| (200..600).contains(code))
                .ok_or_else(|| JsError::Threw(format!("`Status: {value}` is not a status")))?;
        } else {
            headers.push((name, value));
        }
    }
    Ok((status, headers, stdout[body_start..].to_vec()))
}

/// Reactor's WASI preview 1 functions.
fn wasi(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    string_list(linker, "args", |s| &s.args)?;
    string_list(linker, "environ", |s| &s.env)?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, State>, fd: i32, iovs: i32, len: i32, written: i32| {
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            let Some(bytes) = gather(&mut c, iovs, len) else {
                return Ok(EFAULT);
            };
            let n = bytes.len() as u32;
            let state = c.data_mut();
            let out = if fd == 1 {
                &mut state.stdout
            } else {
                &mut state.stderr
            };
            if out.len() + bytes.len() > MAX_OUTPUT {
                return Err(wasmtime::Error::msg(format!(
                    "the module wrote more than {MAX_OUTPUT} bytes"
                )));
            }
            out.extend_from_slice(&bytes);
            Ok(write_u32s(&mut c, &[(written, n)]))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_read",
        |mut c: Caller<'_, State>, fd: i32, iovs: i32, len: i32, read: i32| {
            if fd != 0 {
                return Ok(EBADF);
            }
            let Some(targets) = iovecs(&mut c, iovs, len) else {
                return Ok(EFAULT);
            };
            let mut total = 0u32;
            for (ptr, cap) in targets {
                let state = c.data();
                let rest = &state.stdin[state.read.min(state.stdin.len())..];
                let n = rest.len().min(cap as usize);
                let chunk = rest[..n].to_vec();
                if !write_bytes(&mut c, ptr, &chunk) {
                    return Ok(EFAULT);
                }
                c.data_mut().read += n;
                total += n as u32;
                if n < cap as usize {
                    break;
                }
            }
            Ok(write_u32s(&mut c, &[(read, total)]))
        },
    )?;
    linker.func_wrap(WASI, "fd_close", |_: Caller<'_, State>, fd: i32| {
        Ok(if (0..=2).contains(&fd) {
            ESUCCESS
        } else {
            EBADF
        })
    })?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |_: Caller<'_, State>, fd: i32, _offset: i64, _whence: i32, _to: i32| {
            Ok(if (0..=2).contains(&fd) { ESPIPE } else { EBADF })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut c: Caller<'_, State>, fd: i32, stat: i32| {
            if !(0..=2).contains(&fd) {
                return Ok(EBADF);
            }
            // filetype character_device (2), no flags, every right.
            let mut record = [0u8; 24];
            record[0] = 2;
            record[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            record[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
            Ok(if write_bytes(&mut c, stat as u32, &record) {
                ESUCCESS
            } else {
                EFAULT
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |_: Caller<'_, State>, _fd: i32, _out: i32| Ok(EBADF),
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |_: Caller<'_, State>, _fd: i32, _path: i32, _len: i32| Ok(EBADF),
    )?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, State>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(Exit(code)))
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, State>, id: i32, _precision: i64, out: i32| {
            let nanos = match id {
                // realtime, monotonic, process and thread CPU time: all from the wall clock.
                0..=3 => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                _ => return Ok(EINVAL),
            };
            Ok(if write_bytes(&mut c, out as u32, &nanos.to_le_bytes()) {
                ESUCCESS
            } else {
                EFAULT
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: Caller<'_, State>, _id: i32, out: i32| {
            Ok(
                if write_bytes(&mut c, out as u32, &1_000u64.to_le_bytes()) {
                    ESUCCESS
                } else {
                    EFAULT
                },
            )
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, State>, buf: i32, len: i32| {
            let mut bytes = vec![0u8; len.max(0) as usize];
            rand::Rng::fill(&mut rand::rng(), bytes.as_mut_slice());
            Ok(if write_bytes(&mut c, buf as u32, &bytes) {
                ESUCCESS
            } else {
                EFAULT
            })
        },
    )?;
    linker.func_wrap(WASI, "sched_yield", |_: Caller<'_, State>| Ok(ESUCCESS))?;
    Ok(())
}

/// `<prefix>_sizes_get` and `<prefix>_get`: arguments and environment share their layout.
fn string_list(
    linker: &mut Linker<State>,
    prefix: &str,
    list: fn(&State) -> &Vec<String>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI,
        &format!("{prefix}_sizes_get"),
        move |mut c: Caller<'_, State>, count: i32, size: i32| {
            let (n, bytes) = sizes(list(c.data()));
            Ok(write_u32s(&mut c, &[(count, n), (size, bytes)]))
        },
    )?;
    linker.func_wrap(
        WASI,
        &format!("{prefix}_get"),
        move |mut c: Caller<'_, State>, ptrs: i32, buf: i32| {
            let strings = list(c.data()).clone();
            Ok(write_strings(&mut c, &strings, ptrs, buf))
        },
    )?;
    Ok(())
}

/// Every other `wasi_snapshot_preview1` function the module imports: `ENOSYS`.
fn stub_unknown_wasi(linker: &mut Linker<State>, module: &Module) -> wasmtime::Result<()> {
    // What `wasi` defined, asked of the linker itself rather than kept in a second list.
    let mut scratch = Store::new(module.engine(), State::default());
    for import in module.imports() {
        if import.module() != WASI || linker.get(&mut scratch, WASI, import.name()).is_ok() {
            continue;
        }
        let Some(ty) = import.ty().func().cloned() else {
            continue;
        };
        let returns_errno =
            ty.results().len() == 1 && matches!(ty.results().next(), Some(ValType::I32));
        linker.func_new(WASI, import.name(), ty, move |_, _, results| {
            if returns_errno && let Some(slot) = results.first_mut() {
                *slot = Val::I32(ENOSYS);
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn sizes(list: &[String]) -> (u32, u32) {
    (
        list.len() as u32,
        list.iter().map(|s| s.len() as u32 + 1).sum(),
    )
}

fn memory(c: &mut Caller<'_, State>) -> Option<wasmtime::Memory> {
    match c.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

fn write_bytes(c: &mut Caller<'_, State>, at: u32, bytes: &[u8]) -> bool {
    let Some(mem) = memory(c) else { return false };
    mem.write(c, at as usize, bytes).is_ok()
}

fn write_u32s(c: &mut Caller<'_, State>, values: &[(i32, u32)]) -> i32 {
    for (at, value) in values {
        if !write_bytes(c, *at as u32, &value.to_le_bytes()) {
            return EFAULT;
        }
    }
    ESUCCESS
}

/// The `argv`/`environ` layout: pointers at `ptrs`, NUL-terminated strings at `buf`.
fn write_strings(c: &mut Caller<'_, State>, list: &[String], ptrs: i32, buf: i32) -> i32 {
    let mut at = buf as u32;
    for (i, s) in list.iter().enumerate() {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        if !write_bytes(c, ptrs as u32 + 4 * i as u32, &at.to_le_bytes())
            || !write_bytes(c, at, &bytes)
        {
            return EFAULT;
        }
        at += bytes.len() as u32;
    }
    ESUCCESS
}

fn iovecs(c: &mut Caller<'_, State>, iovs: i32, len: i32) -> Option<Vec<(u32, u32)>> {
    let mem = memory(c)?;
    let mut out = Vec::new();
    for i in 0..len.max(0) as usize {
        let mut raw = [0u8; 8];
        mem.read(&*c, iovs as usize + 8 * i, &mut raw).ok()?;
        let ptr = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let len = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        out.push((ptr, len));
    }
    Some(out)
}

fn gather(c: &mut Caller<'_, State>, iovs: i32, len: i32) -> Option<Vec<u8>> {
    let mem = memory(c)?;
    let mut out = Vec::new();
    for (ptr, n) in iovecs(c, iovs, len)? {
        let mut chunk = vec![0u8; n as usize];
        mem.read(&*c, ptr as usize, &mut chunk).ok()?;
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Answer(std::cell::RefCell<Option<u16>>);

    impl Host for Answer {
        fn log(&self, _level: Level, _text: &str) {}
        fn head(
            &self,
            status: u16,
            _headers: Vec<(String, String)>,
            _body: Option<Vec<u8>>,
        ) -> Result<(), crate::js::Closed> {
            *self.0.borrow_mut() = Some(status);
            Ok(())
        }
        fn chunk(&self, _bytes: Vec<u8>) -> Result<(), crate::js::Closed> {
            Ok(())
        }
        fn fetch(&self, _request: crate::js::OutboundRequest, done: crate::js::FetchDone) {
            done(Err("no network here".into()));
        }
    }

    /// Instances come from the pool: with every slot held, an invocation is refused as
    /// saturated (not failed); a slot given back serves the next one. (No other test in this
    /// binary instantiates WASM, so the pool is this test's alone.)
    #[test]
    fn instances_come_from_a_bounded_pool() {
        let program = WasmProgram::compile(
            include_bytes!("../tests/fixtures/echo.wat"),
            true,
            "echo".into(),
        )
        .expect("compiles");
        let engine = engine().expect("engine");
        let mut held = Vec::new();
        for _ in 0..INSTANCE_SLOTS {
            let mut store = Store::new(engine, State::default());
            program.pre.instantiate(&mut store).expect("a free slot");
            held.push(store);
        }
        let call = || {
            let answer = Rc::new(Answer(std::cell::RefCell::new(None)));
            let request = JsRequest {
                method: "POST".into(),
                url: "http://h/fn/v1/echo".into(),
                headers: Vec::new(),
                body: b"hi".to_vec(),
            };
            let limits = JsLimits {
                memory_bytes: 16 << 20,
                timeout: Duration::from_secs(5),
            };
            let result = invoke(&program, request, &BTreeMap::new(), limits, answer.clone());
            (result, answer.0.borrow().to_owned())
        };
        let (result, status) = call();
        assert!(
            matches!(result, Err(JsError::Saturated(INSTANCE_SLOTS))),
            "{result:?}"
        );
        assert_eq!(status, None);
        held.pop();
        let (result, status) = call();
        result.expect("a slot was free again");
        assert_eq!(status, Some(201));
    }

    #[test]
    fn cgi_output_is_parsed() {
        let (status, headers, body) =
            parse_cgi(b"Status: 201 Created\r\nContent-Type: text/plain\r\n\r\nhello".to_vec())
                .expect("parses");
        assert_eq!(status, 201);
        assert_eq!(
            headers,
            [("content-type".to_string(), "text/plain".to_string())]
        );
        assert_eq!(body, b"hello");
        let (status, _, body) = parse_cgi(b"Content-Type: a/b\n\nx\n\ny".to_vec()).expect("parses");
        assert_eq!((status, body.as_slice()), (200, &b"x\n\ny"[..]));
        assert!(parse_cgi(b"no headers at all".to_vec()).is_err());
        assert!(parse_cgi(b"Status: nine\n\n".to_vec()).is_err());
    }

    #[test]
    fn cgi_environment_names_the_request() {
        let request = JsRequest {
            method: "POST".into(),
            url: "http://h/fn/v1/cgi/a/b?x=1".into(),
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("x-reactor-user-id".into(), "u1".into()),
            ],
            body: b"abc".to_vec(),
        };
        let env = cgi_environment(&request, &BTreeMap::from([("TOKEN".into(), "t".into())]));
        for expected in [
            "REQUEST_METHOD=POST",
            "SCRIPT_NAME=/fn/v1/cgi",
            "PATH_INFO=/a/b",
            "QUERY_STRING=x=1",
            "CONTENT_LENGTH=3",
            "CONTENT_TYPE=text/plain",
            "HTTP_X_REACTOR_USER_ID=u1",
            "TOKEN=t",
        ] {
            assert!(env.iter().any(|v| v == expected), "{expected} in {env:?}");
        }
    }
}

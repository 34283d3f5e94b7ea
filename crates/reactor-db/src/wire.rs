//! A PostgreSQL protocol client for Data's request connections.
//!
//! It exists for one thing `tokio_postgres` cannot do: put several statements under one
//! `Sync`. PostgreSQL flushes its answers and wakes the client once per `Sync`, and outside a
//! transaction block the statements before a `Sync` form one implicit transaction, so they
//! share one commit and one WAL flush. `bench/pgsync.sh` measured reads ×1.4–1.7 and inserts
//! ×3.8–4.2 against a `Sync` per statement.
//!
//! One task per connection (the driver) owns the socket. Statements wait in its queue while a
//! batch is out; when the batch's `ReadyForQuery` arrives, everything queued goes out as the
//! next batch (Parse once per text and connection, then Bind/Execute pairs, then one `Sync`).
//! So a lone statement is sent at once, and under load a batch grows to whatever arrived
//! during one round trip.
//!
//! The rule that keeps a batch correct: it commits whole or not at all. When a statement in
//! it fails, PostgreSQL rolls the batch back and skips the rest, and nobody has been answered
//! yet: the failing statement is sent again alone (the statements before it may have seen
//! rows that no longer exist), and the others again as a new batch, so each round settles at
//! least one statement. A statement that fails alone fails for good.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::config::{Config, Host, SslMode};
use tokio_postgres::types::{IsNull, ToSql, Type};

/// Statements in one batch at most: a bound on the work redone when one of them fails.
const BATCH_MAX: usize = 64;

/// Prepared statements kept per connection; past this they are closed and the cache starts
/// over (the Data API renders one text per query shape and binds values, so a real app stays
/// far below).
const PREPARED_MAX: usize = 512;

/// The SQLSTATE of `reactor.assert_session`'s failure (`internal_error`): the session is not
/// whom the pool believes, so the connection is dropped.
pub const SESSION_GUARD: &str = "XX000";

/// A failed statement: what PostgreSQL said, or why the connection is gone.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WireError {
    #[error("{} ({})", .0.message, .0.code)]
    Db(Arc<PgError>),
    #[error("{0}")]
    Connection(Arc<str>),
}

/// An `ErrorResponse`'s fields that reach the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl WireError {
    fn connection(why: impl Into<Arc<str>>) -> WireError {
        WireError::Connection(why.into())
    }

    fn closed() -> WireError {
        WireError::connection("the Data request connection is closed")
    }

    pub fn as_db(&self) -> Option<&PgError> {
        match self {
            WireError::Db(e) => Some(e),
            WireError::Connection(_) => None,
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::connection(format!("the Data request connection failed: {e}"))
    }
}

/// The first row a statement returned, its values in PostgreSQL's text format.
#[derive(Debug, Clone)]
pub struct Row {
    buffer: Bytes,
    ranges: Vec<Option<Range<usize>>>,
}

impl Row {
    /// Column `i` as text (`None` for SQL null).
    pub fn text(&self, i: usize) -> Result<Option<&str>, WireError> {
        let range = self
            .ranges
            .get(i)
            .ok_or_else(|| WireError::connection(format!("the row has no column {i}")))?;
        range
            .clone()
            .map(|r| {
                std::str::from_utf8(&self.buffer[r])
                    .map_err(|_| WireError::connection(format!("column {i} is not UTF-8")))
            })
            .transpose()
    }

    /// Column `i` as an integer (`None` for SQL null).
    pub fn int(&self, i: usize) -> Result<Option<i64>, WireError> {
        self.text(i)?
            .map(|t| {
                t.parse()
                    .map_err(|_| WireError::connection(format!("column {i} ({t}) is no integer")))
            })
            .transpose()
    }
}

/// What went over the wire since the counters were made; shared by a pool's connections.
#[derive(Debug, Default)]
pub struct Counters {
    pub statements: AtomicU64,
    pub syncs: AtomicU64,
    /// Statements queued again because their batch was rolled back.
    pub resent: AtomicU64,
}

/// A connection's handle: statements are queued to its driver task. Dropping every handle
/// ends the session.
#[derive(Debug, Clone)]
pub struct Client {
    jobs: mpsc::UnboundedSender<Job>,
}

/// Whether a statement may share its `Sync` with others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    Shared,
    /// A `Sync` of its own: it never runs again because another statement failed, which a
    /// developer's function needs (its effects outside the database would happen twice).
    Own,
}

struct Job {
    kind: Kind,
    /// Sent in a batch of its own: asked so (`Batching::Own`, simple queries), or it failed in
    /// a batch and its error is final only alone.
    alone: bool,
    reply: oneshot::Sender<Result<Option<Row>, WireError>>,
}

enum Kind {
    /// Parse (once per connection), Bind and Execute, under a `Sync` shared with others.
    Extended {
        sql: Box<str>,
        types: Vec<u32>,
        /// The Bind message's parameter section (count, then length and bytes of each).
        values: Bytes,
    },
    /// A simple-protocol query (`begin`, `commit`), always a batch of its own.
    Simple(Box<str>),
}

impl Client {
    /// Connects and authenticates (trust, password, md5 or SCRAM-SHA-256; no TLS), then
    /// starts the connection's driver task.
    pub async fn connect(config: &Config, counters: Arc<Counters>) -> Result<Client, WireError> {
        if config.get_ssl_mode() == SslMode::Require {
            return Err(WireError::connection(
                "sslmode=require: Data request connections do not speak TLS (hint: connect over \
                 a private network or a Unix socket, with sslmode=prefer or disable)",
            ));
        }
        let (read, write) = open(config).await?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        let mut driver = Driver {
            read,
            write,
            input: BytesMut::with_capacity(16 * 1024),
            output: BytesMut::with_capacity(16 * 1024),
            jobs: receiver,
            queue: VecDeque::new(),
            batch: None,
            prepared: HashMap::new(),
            next_name: 0,
            idle: true,
            counters,
        };
        within_connect_timeout(config, driver.startup(config))
            .await
            .map_err(|_| {
                WireError::connection("PostgreSQL did not answer the startup in time")
            })??;
        tokio::spawn(driver.run());
        Ok(Client { jobs })
    }

    /// Runs one statement, its parameters bound in binary with the given types, and answers
    /// its first row. Under `Batching::Shared` it may share a `Sync` (and an implicit
    /// transaction) with other statements queued on this connection.
    pub async fn query_one(
        &self,
        sql: &str,
        types: &[Type],
        params: &[&(dyn ToSql + Sync)],
        batching: Batching,
    ) -> Result<Row, WireError> {
        let kind = Kind::Extended {
            sql: sql.into(),
            types: types.iter().map(Type::oid).collect(),
            values: encode(types, params)?,
        };
        self.send(kind, batching == Batching::Own)
            .await?
            .ok_or_else(|| WireError::connection("the statement returned no row"))
    }

    /// Runs a simple-protocol query alone (`begin`, `commit`, `rollback`).
    pub async fn simple(&self, sql: &str) -> Result<(), WireError> {
        self.send(Kind::Simple(sql.into()), true).await.map(|_| ())
    }

    async fn send(&self, kind: Kind, alone: bool) -> Result<Option<Row>, WireError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { kind, alone, reply })
            .map_err(|_| WireError::closed())?;
        answer.await.map_err(|_| WireError::closed())?
    }
}

/// The Bind message's parameter section, encoded by the caller so nothing it borrows goes to
/// the driver task.
fn encode(types: &[Type], params: &[&(dyn ToSql + Sync)]) -> Result<Bytes, WireError> {
    if types.len() != params.len() {
        return Err(WireError::connection(format!(
            "{} parameter types for {} parameters",
            types.len(),
            params.len()
        )));
    }
    let count = i16::try_from(params.len())
        .map_err(|_| WireError::connection("too many parameters for one statement"))?;
    let mut out = BytesMut::new();
    out.put_i16(count);
    for (param, ty) in params.iter().zip(types) {
        let at = out.len();
        out.put_i32(0);
        let written = param
            .to_sql_checked(ty, &mut out)
            .map_err(|e| WireError::connection(format!("cannot encode a parameter: {e}")))?;
        let len = match written {
            IsNull::Yes => -1,
            IsNull::No => i32::try_from(out.len() - at - 4)
                .map_err(|_| WireError::connection("a parameter is too large"))?,
        };
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    // PostgreSQL refuses messages over 1 GiB; saying so here keeps `bind`'s length exact.
    if out.len() > (1 << 30) - 4096 {
        return Err(WireError::connection(
            "the parameters are too large for one statement",
        ));
    }
    Ok(out.freeze())
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The first host of the URL that accepts a connection (TCP, or a Unix socket directory).
async fn open(config: &Config) -> Result<(Reader, Writer), WireError> {
    let ports = config.get_ports();
    let mut last = WireError::connection("the Postgres URL names no host");
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = match ports {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        };
        let opened = async {
            match host {
                Host::Tcp(name) => {
                    let stream = tokio::net::TcpStream::connect((name.as_str(), port)).await?;
                    stream.set_nodelay(true)?;
                    let (read, write) = stream.into_split();
                    Ok::<(Reader, Writer), io::Error>((Box::new(read), Box::new(write)))
                }
                Host::Unix(dir) => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    let (read, write) = tokio::net::UnixStream::connect(path).await?.into_split();
                    Ok::<(Reader, Writer), io::Error>((Box::new(read), Box::new(write)))
                }
            }
        };
        let opened = within_connect_timeout(config, opened)
            .await
            .unwrap_or_else(|_| Err(io::Error::other("timed out")));
        match opened {
            Ok(halves) => return Ok(halves),
            Err(e) => last = WireError::connection(format!("cannot connect to Postgres: {e}")),
        }
    }
    Err(last)
}

/// `work` bounded by the URL's `connect_timeout`, when it names one (each host's connection,
/// then the startup and login).
async fn within_connect_timeout<F: Future>(
    config: &Config,
    work: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    match config.get_connect_timeout() {
        Some(limit) => tokio::time::timeout(*limit, work).await,
        None => Ok(work.await),
    }
}

/// The statements sent under one `Sync`, answered in order.
struct Batch {
    sent: Vec<Sent>,
    /// The statement the next answer belongs to.
    at: usize,
    failed: Option<(usize, WireError)>,
    /// Sent outside a transaction block: the batch is one implicit transaction.
    implicit: bool,
    simple: bool,
}

struct Sent {
    job: Job,
    /// The text whose Parse this statement sent (the cache entry to drop if it was skipped).
    parsed: Option<Box<str>>,
    row: Option<Row>,
}

struct Prepared {
    name: Box<str>,
    /// PostgreSQL answered its Parse.
    confirmed: bool,
}

struct Driver {
    read: Reader,
    write: Writer,
    input: BytesMut,
    output: BytesMut,
    jobs: mpsc::UnboundedReceiver<Job>,
    /// Jobs waiting for the batch out to be answered (sent again ones first).
    queue: VecDeque<Job>,
    batch: Option<Batch>,
    prepared: HashMap<Box<str>, Prepared>,
    next_name: u64,
    /// The last `ReadyForQuery` said no transaction block is open.
    idle: bool,
    counters: Arc<Counters>,
}

impl Driver {
    async fn startup(&mut self, config: &Config) -> Result<(), WireError> {
        let user = config
            .get_user()
            .ok_or_else(|| WireError::connection("the Postgres URL names no user"))?;
        let mut parameters = vec![
            ("user", user),
            ("client_encoding", "UTF8"),
            ("database", config.get_dbname().unwrap_or(user)),
        ];
        if let Some(options) = config.get_options() {
            parameters.push(("options", options));
        }
        if let Some(name) = config.get_application_name() {
            parameters.push(("application_name", name));
        }
        frontend::startup_message(parameters, &mut self.output)?;
        self.flush().await?;
        let password = || {
            config.get_password().ok_or_else(|| {
                WireError::connection(
                    "PostgreSQL asks for a password and the URL has none (hint: \
                     postgres://user:password@host/db)",
                )
            })
        };
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.next().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?, &mut self.output)?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(user.as_bytes(), password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.output)?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = false;
                    while let Some(m) = mechanisms.next()? {
                        offered |= m == sasl::SCRAM_SHA_256;
                    }
                    if !offered {
                        return Err(WireError::connection(
                            "PostgreSQL offers no SASL mechanism this client speaks",
                        ));
                    }
                    let client =
                        sasl::ScramSha256::new(password()?, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        client.message(),
                        &mut self.output,
                    )?;
                    self.flush().await?;
                    scram = Some(client);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let client = scram.as_mut().ok_or_else(|| unexpected("SASL continue"))?;
                    client.update(body.data())?;
                    frontend::sasl_response(client.message(), &mut self.output)?;
                    self.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let client = scram.as_mut().ok_or_else(|| unexpected("SASL final"))?;
                    client.finish(body.data())?;
                }
                Message::BackendKeyData(_)
                | Message::ParameterStatus(_)
                | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(pg_error(body.fields())),
                _ => {
                    return Err(WireError::connection(
                        "PostgreSQL asks for an authentication this client does not speak \
                         (trust, password, md5 and SCRAM-SHA-256 are spoken)",
                    ));
                }
            }
        }
    }

    /// The next message, read sequentially (the startup has nothing else to do meanwhile).
    async fn next(&mut self) -> Result<Message, WireError> {
        loop {
            if let Some(message) = Message::parse(&mut self.input)? {
                return Ok(message);
            }
            if self.read.read_buf(&mut self.input).await? == 0 {
                return Err(WireError::connection(
                    "PostgreSQL closed the connection during the startup",
                ));
            }
        }
    }

    async fn flush(&mut self) -> Result<(), WireError> {
        self.write.write_all(&self.output).await?;
        self.output.clear();
        Ok(())
    }

    async fn run(mut self) {
        let ended = self.serve().await;
        let error = match ended {
            Ok(()) => WireError::closed(),
            Err(e) => {
                tracing::debug!(error = %e, "a Data request connection closed");
                e
            }
        };
        self.jobs.close();
        if let Some(batch) = self.batch.take() {
            for sent in batch.sent {
                let _ = sent.job.reply.send(Err(error.clone()));
            }
        }
        while let Ok(job) = self.jobs.try_recv() {
            self.queue.push_back(job);
        }
        for job in self.queue.drain(..) {
            let _ = job.reply.send(Err(error.clone()));
        }
    }

    /// Sends batches and reads answers until every handle is gone (`Ok`) or the connection
    /// fails.
    async fn serve(&mut self) -> Result<(), WireError> {
        loop {
            if self.batch.is_none() {
                while let Ok(job) = self.jobs.try_recv() {
                    self.queue.push_back(job);
                }
                if self.queue.is_empty() {
                    tokio::select! {
                        job = self.jobs.recv() => match job {
                            Some(job) => self.queue.push_back(job),
                            None => {
                                frontend::terminate(&mut self.output);
                                let _ = self.flush().await;
                                return Ok(());
                            }
                        },
                        read = self.read.read_buf(&mut self.input) => self.received(read)?,
                    }
                    continue;
                }
                self.start_batch()?;
                if self.batch.is_none() {
                    // Every queued request had gone away.
                    continue;
                }
            }
            // Reading while writing: PostgreSQL may answer before it has read the whole batch.
            tokio::select! {
                written = self.write.write(&self.output), if !self.output.is_empty() => {
                    match written? {
                        0 => return Err(WireError::connection("PostgreSQL stopped reading")),
                        n => self.output.advance(n),
                    }
                }
                read = self.read.read_buf(&mut self.input) => self.received(read)?,
            }
        }
    }

    /// Writes the queued statements as one batch (nothing when every one was given up).
    fn start_batch(&mut self) -> Result<(), WireError> {
        let mut jobs = Vec::new();
        while let Some(job) = self.queue.pop_front() {
            // Its request went away before it was sent.
            if job.reply.is_closed() {
                continue;
            }
            let own = job.alone;
            if own && !jobs.is_empty() {
                self.queue.push_front(job);
                break;
            }
            jobs.push(job);
            if own || jobs.len() == BATCH_MAX {
                break;
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let simple = matches!(jobs[0].kind, Kind::Simple(_));
        // Closed at the head of an extended batch, whose `Sync` ends them too.
        if !simple && self.prepared.len() >= PREPARED_MAX {
            for prepared in self.prepared.values() {
                frontend::close(b'S', &prepared.name, &mut self.output)?;
            }
            self.prepared.clear();
        }
        let mut sent = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut parsed = None;
            match &job.kind {
                Kind::Simple(sql) => frontend::query(sql, &mut self.output)?,
                Kind::Extended { sql, types, values } => {
                    let name = match self.prepared.get(sql) {
                        Some(prepared) => prepared.name.clone(),
                        None => {
                            let name: Box<str> = format!("r{}", self.next_name).into();
                            self.next_name += 1;
                            frontend::parse(&name, sql, types.iter().copied(), &mut self.output)?;
                            self.prepared.insert(
                                sql.clone(),
                                Prepared {
                                    name: name.clone(),
                                    confirmed: false,
                                },
                            );
                            parsed = Some(sql.clone());
                            name
                        }
                    };
                    bind(&name, values, &mut self.output);
                    frontend::execute("", 0, &mut self.output)?;
                }
            }
            sent.push(Sent {
                job,
                parsed,
                row: None,
            });
        }
        if !simple {
            frontend::sync(&mut self.output);
        }
        self.counters
            .statements
            .fetch_add(sent.len() as u64, Ordering::Relaxed);
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        self.batch = Some(Batch {
            sent,
            at: 0,
            failed: None,
            implicit: self.idle && !simple,
            simple,
        });
        Ok(())
    }

    fn received(&mut self, read: io::Result<usize>) -> Result<(), WireError> {
        if read? == 0 {
            return Err(self
                .batch
                .as_mut()
                .and_then(|b| b.failed.take())
                .map(|(_, e)| e)
                .unwrap_or_else(|| WireError::connection("PostgreSQL closed the connection")));
        }
        while let Some(message) = Message::parse(&mut self.input)? {
            self.answer(message)?;
        }
        Ok(())
    }

    fn answer(&mut self, message: Message) -> Result<(), WireError> {
        if matches!(
            message,
            Message::NoticeResponse(_)
                | Message::ParameterStatus(_)
                | Message::NotificationResponse(_)
        ) {
            return Ok(());
        }
        let Some(batch) = self.batch.as_mut() else {
            // Nothing was asked: a FATAL error (an administrator ended the session) or noise.
            return Err(match message {
                Message::ErrorResponse(body) => pg_error(body.fields()),
                _ => unexpected("an answer to nothing"),
            });
        };
        let last = batch.sent.len() - 1;
        match message {
            Message::ParseComplete => {
                let key = batch.sent.get(batch.at).and_then(|s| s.parsed.as_ref());
                if let Some(prepared) = key.and_then(|k| self.prepared.get_mut(k)) {
                    prepared.confirmed = true;
                }
            }
            Message::DataRow(row) => {
                if let Some(sent) = batch.sent.get_mut(batch.at)
                    && sent.row.is_none()
                {
                    let ranges = row.ranges().collect()?;
                    sent.row = Some(Row {
                        buffer: row.buffer_bytes().clone(),
                        ranges,
                    });
                }
            }
            Message::CommandComplete(_) | Message::EmptyQueryResponse => {
                if !batch.simple {
                    batch.at += 1;
                }
            }
            Message::ErrorResponse(body) => {
                let error = pg_error(body.fields());
                if batch.failed.is_none() {
                    batch.failed = Some((batch.at.min(last), error));
                }
            }
            Message::ReadyForQuery(body) => {
                self.idle = body.status() == b'I';
                if let Some(batch) = self.batch.take() {
                    self.finish(batch)?;
                }
            }
            Message::BindComplete
            | Message::CloseComplete
            | Message::RowDescription(_)
            | Message::NoData
            | Message::ParameterDescription(_) => {}
            _ => return Err(unexpected("a message this client never asks for")),
        }
        Ok(())
    }

    /// Answers a batch, or queues its statements again when it was rolled back (see the
    /// module's doc).
    fn finish(&mut self, batch: Batch) -> Result<(), WireError> {
        let Some((failing, error)) = batch.failed else {
            for sent in batch.sent {
                let _ = sent.job.reply.send(Ok(sent.row));
            }
            return Ok(());
        };
        // A Parse that PostgreSQL skipped or refused prepared nothing.
        for sent in &batch.sent {
            if let Some(key) = &sent.parsed
                && self.prepared.get(key).is_some_and(|p| !p.confirmed)
            {
                self.prepared.remove(key);
            }
        }
        let guard = error.as_db().is_some_and(|e| e.code == SESSION_GUARD);
        if guard || !batch.implicit || batch.sent.len() == 1 {
            for sent in batch.sent {
                let _ = sent.job.reply.send(Err(error.clone()));
            }
            // The session is not what the pool believes: nothing more runs on it.
            return if guard { Err(error) } else { Ok(()) };
        }
        let mut others = Vec::with_capacity(batch.sent.len() - 1);
        let mut alone = None;
        for (i, sent) in batch.sent.into_iter().enumerate() {
            if i == failing {
                alone = Some(sent.job);
            } else {
                others.push(sent.job);
            }
        }
        self.counters
            .resent
            .fetch_add(others.len() as u64 + 1, Ordering::Relaxed);
        for job in others.into_iter().rev() {
            self.queue.push_front(job);
        }
        if let Some(mut job) = alone {
            job.alone = true;
            self.queue.push_front(job);
        }
        Ok(())
    }
}

/// A Bind of the unnamed portal to `statement`: parameters in binary, results in text.
fn bind(statement: &str, values: &[u8], out: &mut BytesMut) {
    let len = 4 + 1 + statement.len() + 1 + 4 + values.len() + 4;
    out.put_u8(b'B');
    out.put_i32(len as i32); // bounded by `encode`
    out.put_u8(0);
    out.put_slice(statement.as_bytes());
    out.put_u8(0);
    out.put_i16(1);
    out.put_i16(1);
    out.put_slice(values);
    out.put_i16(1);
    out.put_i16(0);
}

fn pg_error(mut fields: ErrorFields<'_>) -> WireError {
    let mut error = PgError {
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => error.code = value,
            b'M' => error.message = value,
            b'D' => error.detail = Some(value),
            b'H' => error.hint = Some(value),
            _ => {}
        }
    }
    WireError::Db(Arc::new(error))
}

fn unexpected(what: &str) -> WireError {
    WireError::connection(format!("PostgreSQL sent {what}"))
}

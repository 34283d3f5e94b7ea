//! How much PostgreSQL gains when pipelined statements share one `Sync`.
//!
//! `tokio_postgres`, which Data's request connections speak through, ends every statement
//! with a `Sync`: PostgreSQL then flushes an answer and, outside a transaction block, commits
//! once per statement. This tool speaks the protocol directly and runs the same prepared
//! statement two ways on the same connections, `depth` statements in flight on each:
//! `each` (a `Sync` after every statement, as today) and `batch` (one `Sync` after the
//! `depth` statements, which then form one implicit transaction). It measures a read by key
//! and a single-row insert, and prints statements/s and the ratio.
//!
//! Usage: pgsync [HOST:PORT] [SECONDS]   (user `postgres`, trust authentication)

use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::IsNull;
use postgres_protocol::message::{backend::Message, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DATABASE: &str = "reactor_pgsync";
const CONNECTIONS: usize = 8;
const DEPTH: usize = 8;

const READ: &str = "select coalesce(json_agg(_r), '[]')::text, count(*), null::bigint \
                    from (select * from items where id = $1::uuid and org = 'acme') _r";
const INSERT: &str = "with _w as (insert into items (org, title, n, owner) \
                      values ('acme', $1, 7, 1) returning *) \
                      select coalesce(json_agg(_w), '[]')::text, count(*), null::bigint from _w";

type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Conn {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
}

impl Conn {
    async fn open(addr: &str, database: &str) -> Result<Conn, Failure> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            input: BytesMut::with_capacity(64 * 1024),
            output: BytesMut::new(),
        };
        frontend::startup_message(
            [("user", "postgres"), ("database", database)],
            &mut conn.output,
        )?;
        conn.flush().await?;
        conn.until_ready(1).await?;
        Ok(conn)
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        self.stream.write_all(&self.output).await?;
        self.output.clear();
        Ok(())
    }

    /// The next message from PostgreSQL; an error it answers becomes this call's error.
    async fn next(&mut self) -> Result<Message, Failure> {
        loop {
            match Message::parse(&mut self.input)? {
                Some(Message::ErrorResponse(body)) => {
                    let mut fields = body.fields();
                    let mut text = String::from("PostgreSQL answered an error");
                    while let Some(field) = fields.next()? {
                        if field.type_() == b'M' {
                            text = String::from_utf8_lossy(field.value_bytes()).into_owned();
                        }
                    }
                    return Err(text.into());
                }
                Some(message) => return Ok(message),
                None => {
                    if self.stream.read_buf(&mut self.input).await? == 0 {
                        return Err("PostgreSQL closed the connection".into());
                    }
                }
            }
        }
    }

    /// Reads until `ready` ReadyForQuery messages arrived; answers the statements completed.
    async fn until_ready(&mut self, ready: usize) -> Result<usize, Failure> {
        let (mut seen, mut done) = (0, 0);
        while seen < ready {
            match self.next().await? {
                Message::ReadyForQuery(_) => seen += 1,
                Message::CommandComplete(_) => done += 1,
                _ => {}
            }
        }
        Ok(done)
    }

    async fn simple(&mut self, sql: &str) -> Result<(), Failure> {
        frontend::query(sql, &mut self.output)?;
        self.flush().await?;
        self.until_ready(1).await?;
        Ok(())
    }

    async fn first_value(&mut self, sql: &str) -> Result<String, Failure> {
        frontend::query(sql, &mut self.output)?;
        self.flush().await?;
        loop {
            if let Message::DataRow(row) = self.next().await? {
                let range = row.ranges().next()?.flatten().ok_or("no value")?;
                let value = String::from_utf8(row.buffer()[range].to_vec())?;
                self.until_ready(1).await?;
                return Ok(value);
            }
        }
    }
}

/// One connection: `DEPTH` statements sent, their answers awaited, again until `end`.
async fn drive(
    addr: String,
    sql: &'static str,
    arg: String,
    batch: bool,
    end: Instant,
) -> Result<usize, Failure> {
    let mut conn = Conn::open(&addr, DATABASE).await?;
    frontend::parse("s", sql, [], &mut conn.output)?;
    frontend::sync(&mut conn.output);
    conn.flush().await?;
    conn.until_ready(1).await?;
    let mut total = 0;
    while Instant::now() < end {
        for _ in 0..DEPTH {
            let bound = frontend::bind(
                "",
                "s",
                [0i16],
                [arg.as_str()],
                |v, buf| {
                    buf.extend_from_slice(v.as_bytes());
                    Ok(IsNull::No)
                },
                [0i16],
                &mut conn.output,
            );
            bound.map_err(|_| "cannot encode the parameter")?;
            frontend::execute("", 0, &mut conn.output)?;
            if !batch {
                frontend::sync(&mut conn.output);
            }
        }
        if batch {
            frontend::sync(&mut conn.output);
        }
        conn.flush().await?;
        total += conn.until_ready(if batch { 1 } else { DEPTH }).await?;
    }
    Ok(total)
}

async fn measure(
    addr: &str,
    sql: &'static str,
    arg: &str,
    batch: bool,
    seconds: u64,
) -> Result<f64, Failure> {
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(drive(addr.to_string(), sql, arg.to_string(), batch, end)))
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:5432".into());
    let seconds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);

    let mut admin = Conn::open(&addr, "postgres").await?;
    admin
        .simple(&format!("drop database if exists {DATABASE}"))
        .await?;
    admin.simple(&format!("create database {DATABASE}")).await?;
    let mut setup = Conn::open(&addr, DATABASE).await?;
    setup
        .simple(
            "create table items (id uuid primary key default gen_random_uuid(), org text not null, \
             title text not null, n integer not null, owner integer);
             insert into items (org, title, n, owner)
                 select case when i % 2 = 0 then 'acme' else 'other' end, 'item ' || i, i, i % 100 + 1
                 from generate_series(1, 10000) i",
        )
        .await?;
    setup.simple("vacuum analyze items").await?;
    let id = setup
        .first_value("select id from items where org = 'acme' limit 1")
        .await?;
    drop(setup);

    println!(
        "{CONNECTIONS} connections, {DEPTH} statements in flight on each, {seconds} s per run"
    );
    for (name, sql, arg) in [
        ("read by key", READ, id.as_str()),
        ("insert", INSERT, "new"),
    ] {
        let each = measure(&addr, sql, arg, false, seconds).await?;
        let batch = measure(&addr, sql, arg, true, seconds).await?;
        println!(
            "{name:12} a Sync each: {each:>8.0}/s   one Sync per {DEPTH}: {batch:>8.0}/s   ×{:.2}",
            batch / each
        );
    }
    admin.simple(&format!("drop database {DATABASE}")).await?;
    Ok(())
}

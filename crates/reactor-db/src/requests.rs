//! The Postgres connections `/data/v1` requests run on.
//!
//! A request's statement must run as its caller: the database role (`reactor_anon`,
//! `reactor_authenticated`, `reactor_service`) and the `reactor.*` settings row-level security
//! reads. Setting them per request in a transaction costs four round trips (`begin`, the
//! settings, the statement, `commit`); here a connection keeps its caller's settings at session
//! level and serves that caller again, so a request is usually one autocommit statement.
//!
//! Statements of the same caller share a connection while in flight: the statements queued on
//! it go out together under one `Sync` (see `wire`), so one round trip, one backend wake-up
//! and, for writes, one commit serve several requests. On two cores sharing alone doubled the
//! statements per second against one statement per connection at a time.
//!
//! Safety rests on two rules: these connections run nothing but statements rendered by the
//! Data API, and every such statement calls `reactor.assert_session` with the identity it
//! expects, so a session that drifted (a developer's function running `reset role`) fails the
//! statement, and every one queued behind it, instead of acting as someone else; the
//! connection is then discarded. A connection changes caller only when nothing is in flight on
//! it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use reactor_core::Principal;
use tokio_postgres::types::{ToSql, Type};

use crate::DbError;
pub use crate::wire::{Batching, Row};
use crate::wire::{Client, Counters, SESSION_GUARD, WireError};

/// `application_name` of request connections (`pg_stat_activity` shows it).
pub const APPLICATION_NAME: &str = "reactor data requests";

/// The URL parameters both sqlx and `tokio_postgres` understand.
const LIBPQ_PARAMETERS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "connect_timeout",
];

/// Who a request connection's session acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdentity {
    pub role: &'static str,
    pub user_id: String,
    pub org_id: String,
    pub org_role: String,
}

impl SessionIdentity {
    pub fn of(principal: &Principal) -> SessionIdentity {
        SessionIdentity {
            role: principal.db_role().name(),
            user_id: principal.user_id.clone().unwrap_or_default(),
            org_id: principal.org_id.clone().unwrap_or_default(),
            org_role: principal.role.clone().unwrap_or_default(),
        }
    }
}

/// How many connections, and how many statements one carries before another is used.
#[derive(Debug, Clone, Copy)]
pub struct RequestPoolSize {
    /// Connections at most (each one a Postgres backend).
    pub connections: usize,
    /// Statements of one caller in flight on a connection before the next statement of that
    /// caller takes another connection (when one is idle or may be opened). More connections
    /// run statements in parallel on the database's cores; fewer pipeline more per wake-up.
    pub spread: usize,
}

/// Request connections, each remembering whom its session acts as (see the module's doc).
#[derive(Debug, Clone)]
pub struct RequestPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: tokio_postgres::Config,
    counters: Arc<Counters>,
    size: RequestPoolSize,
    state: Mutex<State>,
    /// Woken when a connection goes idle, is dropped, or fails to open.
    freed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    slots: Vec<Slot>,
    opening: usize,
    waiting: usize,
    next_id: u64,
    next_ticket: u64,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    session: Arc<Session>,
    /// `None` until a new connection's first session is set. While a session changes, the
    /// slot is exclusive and still names the previous caller (dropped if the change fails).
    /// Slots acting as the same caller share one `Arc`, so `plan` compares the caller's
    /// strings once per statement, not once per connection.
    identity: Option<Arc<SessionIdentity>>,
    /// Leases out on it: shared statements, or the one exclusive lease.
    leases: usize,
    exclusive: bool,
    /// Promised to the waiting request holding this ticket: no new statement joins, and once
    /// idle only that request takes it (so a caller keeping every connection busy cannot
    /// starve another).
    reserved: Option<u64>,
}

#[derive(Debug)]
struct Session {
    client: Client,
}

/// Statements and `Sync`s sent since the pool was made: statements per `Sync` say how much
/// batching the load allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub statements: u64,
    pub syncs: u64,
    /// Sent again after their batch was rolled back (counted in `statements` each time).
    pub resent: u64,
}

/// What `acquire` decided under the lock.
enum Plan {
    Ready(Lease),
    /// An idle connection, lent exclusively until its session is set.
    Set(Lease),
    Open,
    Wait,
}

impl RequestPool {
    /// A pool connecting where `pool` does (the URL `pool` was opened with, password included).
    pub fn new(pool: &sqlx::PgPool, size: RequestPoolSize) -> Result<RequestPool, DbError> {
        use sqlx::ConnectOptions;
        let mut url = pool.connect_options().to_url_lossy();
        // sqlx adds parameters of its own (`statement-cache-capacity`); keep the libpq ones.
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| LIBPQ_PARAMETERS.contains(&k.as_ref()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.set_query(None);
        if !kept.is_empty() {
            url.query_pairs_mut().extend_pairs(kept);
        }
        let mut config: tokio_postgres::Config = url.as_str().parse().map_err(|e| {
            DbError::Task(format!(
                "the Postgres URL {} cannot open request connections: {e}",
                crate::postgres::redact(url.as_str())
            ))
        })?;
        // Named, so an operator tells them apart in `pg_stat_activity` (unless the URL names
        // its connections itself).
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        Ok(RequestPool {
            inner: Arc::new(Inner {
                config,
                counters: Arc::default(),
                size: RequestPoolSize {
                    connections: size.connections.max(1),
                    spread: size.spread.max(1),
                },
                state: Mutex::new(State::default()),
                freed: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Runs one statement in autocommit as `principal`; it shares its connection with other
    /// statements of the same caller, and its `Sync` too unless `Batching::Own`.
    pub async fn query_one(
        &self,
        principal: &Principal,
        sql: &str,
        types: &[Type],
        params: &[&(dyn ToSql + Sync)],
        batching: Batching,
    ) -> Result<Row, DbError> {
        let mut lease = self.acquire(principal, false).await?;
        lease.query_one(sql, types, params, batching).await
    }

    pub fn sent(&self) -> Sent {
        Sent {
            statements: self.inner.counters.statements.load(Ordering::Relaxed),
            syncs: self.inner.counters.syncs.load(Ordering::Relaxed),
            resent: self.inner.counters.resent.load(Ordering::Relaxed),
        }
    }

    /// A connection acting as `principal` lent to one request alone, for a transaction.
    pub async fn exclusive(&self, principal: &Principal) -> Result<Exclusive, DbError> {
        Ok(Exclusive {
            lease: self.acquire(principal, true).await?,
            in_transaction: false,
        })
    }

    async fn acquire(&self, principal: &Principal, exclusive: bool) -> Result<Lease, DbError> {
        let wanted = SessionIdentity::of(principal);
        let mut reservation = Reservation {
            inner: &self.inner,
            ticket: None,
        };
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            let plan = {
                let mut state = self.inner.lock();
                let plan = self.plan(&mut state, &wanted, exclusive, &mut reservation.ticket);
                if matches!(plan, Plan::Wait) {
                    // Registered before the lock is let go, so no wake-up is missed.
                    freed.as_mut().enable();
                    state.waiting += 1;
                }
                plan
            };
            let lease = match plan {
                Plan::Ready(lease) => return Ok(lease),
                Plan::Set(lease) => lease,
                Plan::Open => self.open().await?,
                Plan::Wait => {
                    let _waiting = Counted::waiting(&self.inner);
                    freed.await;
                    continue;
                }
            };
            return self.set_session(lease, principal, wanted, exclusive).await;
        }
    }

    fn plan(
        &self,
        state: &mut State,
        wanted: &SessionIdentity,
        exclusive: bool,
        ticket: &mut Option<u64>,
    ) -> Plan {
        let size = self.inner.size;
        let room = state.slots.len() + state.opening < size.connections;
        // One look at each connection (this runs for every statement).
        let mut busiest_below_spread: Option<usize> = None;
        let mut least_busy: Option<usize> = None;
        let (mut idle_mine, mut idle_same, mut idle_other) = (None, None, None);
        let mut reserved_for_me = false;
        let mut to_reserve: Option<usize> = None;
        let acting = state.acting_as(wanted);
        for (i, slot) in state.slots.iter().enumerate() {
            let same = matches!((&slot.identity, &acting), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
            let mine = ticket.is_some() && slot.reserved == *ticket;
            let leases = |j: Option<usize>| j.map(|j| state.slots[j].leases);
            reserved_for_me |= mine;
            if slot.leases == 0 {
                if mine {
                    idle_mine = Some(i);
                } else if slot.reserved.is_none() {
                    *(if same {
                        &mut idle_same
                    } else {
                        &mut idle_other
                    }) = Some(i);
                }
            }
            if slot.reserved.is_some() || slot.exclusive {
                continue;
            }
            if leases(to_reserve).is_none_or(|l| slot.leases < l) {
                to_reserve = Some(i);
            }
            if !same {
                continue;
            }
            if slot.leases < size.spread
                && leases(busiest_below_spread).is_none_or(|l| slot.leases > l)
            {
                busiest_below_spread = Some(i);
            }
            if leases(least_busy).is_none_or(|l| slot.leases < l) {
                least_busy = Some(i);
            }
        }
        let idle = idle_mine.or(idle_same).or(idle_other);
        if !exclusive {
            // The busiest connection below `spread` first: statements sharing a connection
            // share its writes and its backend's wake-ups. When every one is at `spread` and
            // no other connection can be had, the least busy.
            let grow = room || idle.is_some();
            if let Some(i) = busiest_below_spread.or(least_busy.filter(|_| !grow)) {
                let slot = &mut state.slots[i];
                slot.leases += 1;
                return Plan::Ready(self.lease(slot, false));
            }
        }
        // An idle connection: the one reserved for this request, else one already acting as
        // this caller.
        if let Some(i) = idle {
            let slot = &mut state.slots[i];
            slot.leases = 1;
            slot.exclusive = true;
            slot.reserved = None;
            *ticket = None;
            return Plan::Set(self.lease(slot, true));
        }
        if room {
            state.opening += 1;
            return Plan::Open;
        }
        // Every connection is busy with someone else: the least busy one takes no new
        // statements and is kept for this request, so it comes free even under steady load.
        if !reserved_for_me && let Some(i) = to_reserve {
            let t = state.next_ticket;
            state.next_ticket += 1;
            state.slots[i].reserved = Some(t);
            *ticket = Some(t);
        }
        Plan::Wait
    }

    fn lease(&self, slot: &Slot, exclusive: bool) -> Lease {
        Lease {
            inner: Arc::clone(&self.inner),
            id: slot.id,
            session: Arc::clone(&slot.session),
            exclusive,
            broken: false,
        }
    }

    /// Opens a connection (`plan` counted it in `opening`), lent exclusively to the caller
    /// that opened it.
    async fn open(&self) -> Result<Lease, DbError> {
        let _opening = Counted::opening(&self.inner);
        let client = Client::connect(&self.inner.config, Arc::clone(&self.inner.counters)).await?;
        let mut state = self.inner.lock();
        let id = state.next_id;
        state.next_id += 1;
        let slot = Slot {
            id,
            session: Arc::new(Session { client }),
            identity: None,
            leases: 1,
            exclusive: true,
            reserved: None,
        };
        let lease = self.lease(&slot, true);
        state.slots.push(slot);
        Ok(lease)
    }

    /// Makes an exclusively lent connection act as `principal`, then lends it as asked.
    async fn set_session(
        &self,
        mut lease: Lease,
        principal: &Principal,
        wanted: SessionIdentity,
        exclusive: bool,
    ) -> Result<Lease, DbError> {
        let current = self
            .inner
            .lock()
            .slots
            .iter()
            .find(|s| s.id == lease.id)
            .and_then(|s| s.identity.clone());
        if current.as_deref() != Some(&wanted) {
            // A failure, or the request giving up half-way, leaves the session unknown:
            // `broken` stays set and the connection is closed when the lease drops.
            lease.broken = true;
            let claims = jwt_claims(principal).to_string();
            // Session-level (`false`): kept for the next request of the same caller.
            lease
                .query_one(
                    "select set_config('role', $1, false), set_config('reactor.user_id', $2, false),
                            set_config('reactor.org_id', $3, false), set_config('reactor.role', $4, false),
                            set_config('request.jwt.claims', $5, false)",
                    &[Type::TEXT; 5],
                    &[&wanted.role, &wanted.user_id, &wanted.org_id, &wanted.org_role, &claims],
                    Batching::Own,
                )
                .await?;
            lease.broken = false;
        }
        let mut state = self.inner.lock();
        let shared = state.acting_as(&wanted).unwrap_or_else(|| Arc::new(wanted));
        if let Some(slot) = state.slots.iter_mut().find(|s| s.id == lease.id) {
            slot.identity = Some(shared);
            if !exclusive {
                slot.exclusive = false;
                lease.exclusive = false;
            }
        }
        if !exclusive {
            // Others of this caller may now join it.
            self.inner.release(state);
        }
        Ok(lease)
    }
}

impl State {
    /// The identity of the connections acting as `wanted`, if any does.
    fn acting_as(&self, wanted: &SessionIdentity) -> Option<Arc<SessionIdentity>> {
        self.slots
            .iter()
            .filter_map(|s| s.identity.as_ref())
            .find(|identity| identity.as_ref() == wanted)
            .cloned()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets go of the state and wakes the waiting requests, if any: something came free.
    fn release(&self, state: MutexGuard<'_, State>) {
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.freed.notify_waiters();
        }
    }
}

/// The reservation a waiting request holds, given up if the request goes away before it
/// takes the connection.
struct Reservation<'a> {
    inner: &'a Inner,
    ticket: Option<u64>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else {
            return;
        };
        let mut state = self.inner.lock();
        for slot in &mut state.slots {
            if slot.reserved == Some(ticket) {
                slot.reserved = None;
            }
        }
        self.inner.release(state);
    }
}

/// A request counted in `State::opening` or `State::waiting` until dropped, which a request
/// that gives up half-way (its client went away) must be too.
struct Counted<'a> {
    inner: &'a Inner,
    field: fn(&mut State) -> &mut usize,
    /// Wake the waiters when done: an opening that ends leaves room for another (if it
    /// failed), a wait that ends frees nothing.
    wake: bool,
}

impl Counted<'_> {
    /// Counts a request that `plan` already counted in `opening`.
    fn opening(inner: &Inner) -> Counted<'_> {
        Counted {
            inner,
            field: |s| &mut s.opening,
            wake: true,
        }
    }

    /// Counts a request that `acquire` already counted in `waiting`.
    fn waiting(inner: &Inner) -> Counted<'_> {
        Counted {
            inner,
            field: |s| &mut s.waiting,
            wake: false,
        }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        *(self.field)(&mut state) -= 1;
        if self.wake {
            self.inner.release(state);
        }
    }
}

/// One request's use of a connection; given back (or closed, if `broken`) on drop.
#[derive(Debug)]
struct Lease {
    inner: Arc<Inner>,
    id: u64,
    session: Arc<Session>,
    exclusive: bool,
    broken: bool,
}

impl Lease {
    async fn query_one(
        &mut self,
        sql: &str,
        types: &[Type],
        params: &[&(dyn ToSql + Sync)],
        batching: Batching,
    ) -> Result<Row, DbError> {
        let result = (self.session.client)
            .query_one(sql, types, params, batching)
            .await;
        if let Err(e) = &result
            && !leaves_session_usable(e)
        {
            self.broken = true;
        }
        Ok(result?)
    }

    async fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        let result = self.session.client.simple(sql).await;
        if result.is_err() {
            self.broken = true;
        }
        Ok(result?)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        let Some(at) = state.slots.iter().position(|s| s.id == self.id) else {
            return;
        };
        if self.broken {
            // Dropping the client closes the connection once the last lease on it is gone;
            // statements already queued on it fail on their own.
            state.slots.swap_remove(at);
        } else {
            let slot = &mut state.slots[at];
            slot.leases -= 1;
            if self.exclusive {
                slot.exclusive = false;
            }
            if slot.leases > 0 {
                return;
            }
        }
        self.inner.release(state);
    }
}

/// A database error leaves the session as it was (the statement rolled back alone), except
/// the session guard's (`XX000`), which says the session is not what the pool believes; any
/// other failure (I/O, a closed connection) leaves it unknown.
fn leaves_session_usable(e: &WireError) -> bool {
    e.as_db().is_some_and(|d| d.code != SESSION_GUARD)
}

/// A connection lent to one request alone, acting as its caller: for the statements that need
/// a transaction (read-only, or rolled back unless they touched exactly one row). Dropped
/// inside a transaction, the connection is closed, which rolls the transaction back.
#[derive(Debug)]
pub struct Exclusive {
    lease: Lease,
    in_transaction: bool,
}

impl Exclusive {
    pub async fn begin(&mut self, read_only: bool) -> Result<(), DbError> {
        self.in_transaction = true;
        self.lease
            .batch(if read_only {
                "begin read only"
            } else {
                "begin"
            })
            .await
    }

    pub async fn query_one(
        &mut self,
        sql: &str,
        types: &[Type],
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError> {
        // Inside a transaction block a batch is no transaction of its own: nothing to share.
        self.lease
            .query_one(sql, types, params, Batching::Own)
            .await
    }

    pub async fn commit(mut self) -> Result<(), DbError> {
        self.lease.batch("commit").await?;
        self.in_transaction = false;
        Ok(())
    }

    pub async fn rollback(mut self) -> Result<(), DbError> {
        self.lease.batch("rollback").await?;
        self.in_transaction = false;
        Ok(())
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        if self.in_transaction {
            self.lease.broken = true;
        }
    }
}

/// `request.jwt.claims` as Supabase's policies read it (`auth.jwt() ->> 'sub'`, `'role'`).
pub(crate) fn jwt_claims(principal: &Principal) -> serde_json::Value {
    serde_json::json!({
        "sub": principal.user_id,
        "role": match principal.db_role() {
            reactor_core::DbRole::Anon => "anon",
            reactor_core::DbRole::Authenticated => "authenticated",
            reactor_core::DbRole::Service => "service_role",
        },
        "org_id": principal.org_id,
        "org_role": principal.role,
    })
}

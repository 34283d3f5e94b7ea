//! Limits and usage. Before a request is forwarded, its caller's counters are reserved —
//! one request, an estimate of its tokens and cost — against every limit that applies
//! (one conditional upsert each, so replicas share the budget exactly). When its answer has
//! been streamed out, the usage read from it settles the reservation and becomes a usage
//! row; that work happens on a background task, off the request's path.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reactor_manifest::{GatewayConfig, LimitScope};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::store::{self, Caps, UsageRow};

/// Who is calling, as the key middleware established it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub user_id: Option<String>,
    pub org_id: Option<String>,
}

impl Caller {
    /// The billed identity: the user when signed in, else the key.
    fn label(&self) -> String {
        match &self.user_id {
            Some(u) => format!("user:{u}"),
            None => format!("key:{}", self.key_id),
        }
    }

    fn scope(&self, per: LimitScope) -> Option<String> {
        match per {
            LimitScope::User => self.user_id.as_ref().map(|u| format!("user:{u}")),
            LimitScope::Org => self.org_id.as_ref().map(|o| format!("org:{o}")),
            LimitScope::Key => Some(format!("key:{}", self.key_id)),
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `YYYY-MM-DD` of a time in milliseconds since the epoch (UTC).
pub fn day_of(ms: i64) -> String {
    let (y, m, d) = civil(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let (y, m, d) = reactor_core::time::civil_from_days(days);
    (y, m as u32, d as u32)
}

/// The periods a counter lives in: `(name, ends_at_ms)` for this minute, day and month.
fn periods(now: i64) -> [(String, i64); 3] {
    let minute = now.div_euclid(60_000);
    let day = now.div_euclid(86_400_000);
    let (y, m, _) = civil(day);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let next_month = days_from_civil(ny, nm, 1) * 86_400_000;
    [
        (format!("m:{minute}"), (minute + 1) * 60_000),
        (format!("d:{}", day_of(now)), (day + 1) * 86_400_000),
        (format!("M:{y:04}-{m:02}"), next_month),
    ]
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A request's share of its caller's counters, held until its answer is known.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// `(scope, period)` counters this request reserved in.
    held: Vec<(String, String)>,
    tokens: i64,
    cost_micro: i64,
}

impl Reservation {
    /// Nothing held (an answer from the cache costs nothing).
    pub fn none() -> Reservation {
        Reservation {
            held: Vec::new(),
            tokens: 0,
            cost_micro: 0,
        }
    }
}

/// Why a request was refused: what ran out and when it comes back.
#[derive(Debug)]
pub struct Exceeded {
    pub what: String,
    pub retry_after_secs: u64,
}

/// The tokens a request may use: what it asks for (`max_tokens`) plus its prompt (about
/// four bytes a token).
pub fn estimate_tokens(request: &serde_json::Map<String, Value>, body_len: usize) -> i64 {
    let output = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_i64)
        .unwrap_or(1024);
    output + (body_len / 4) as i64
}

/// Price of `tokens` of a model, in millionths of a dollar (input and output at the higher
/// rate for an estimate).
pub fn cost(config: &GatewayConfig, model: &str, prompt: i64, completion: i64) -> i64 {
    let Some(p) = config.prices.iter().find(|p| p.model == model) else {
        return 0;
    };
    (prompt as i128 * p.input_micro_per_million as i128
        + completion as i128 * p.output_micro_per_million as i128)
        .div_euclid(1_000_000) as i64
}

/// Reserves one request and its estimate against every limit that applies to `caller`.
pub async fn reserve(
    counters: &store::Counters,
    config: &GatewayConfig,
    caller: &Caller,
    tokens: i64,
    cost_micro: i64,
) -> Result<Reservation, Exceeded> {
    let now = now_ms();
    let [minute, day, month] = periods(now);
    let cap = |v: Option<u64>| v.map_or(i64::MAX, |v| v.min(i64::MAX as u64) as i64);
    let mut checks = Vec::new();
    let mut what = Vec::new();
    for limit in &config.limits {
        let Some(scope) = caller.scope(limit.per) else {
            continue;
        };
        let wanted = [
            (
                &minute,
                (1, tokens, 0),
                Caps {
                    requests: cap(limit.requests_per_minute),
                    tokens: cap(limit.tokens_per_minute),
                    cost_micro: i64::MAX,
                },
                "requests or tokens per minute",
            ),
            (
                &day,
                (0, 0, cost_micro),
                Caps {
                    requests: i64::MAX,
                    tokens: i64::MAX,
                    cost_micro: cap(limit.spend_per_day_micro),
                },
                "spend per day",
            ),
            (
                &month,
                (0, 0, cost_micro),
                Caps {
                    requests: i64::MAX,
                    tokens: i64::MAX,
                    cost_micro: cap(limit.spend_per_month_micro),
                },
                "spend per month",
            ),
        ];
        for ((period, ends), (requests, t, c), caps, label) in wanted {
            let limited =
                caps.requests < i64::MAX || caps.tokens < i64::MAX || caps.cost_micro < i64::MAX;
            if !limited {
                continue;
            }
            checks.push(store::Check {
                scope: scope.clone(),
                period: period.clone(),
                // Counters live a period past their end, then the recorder drops them.
                expires_ms: ends + 60_000,
                requests,
                tokens: t,
                cost_micro: c,
                caps,
            });
            what.push((format!("{label} for {scope}"), *ends));
        }
    }
    if checks.is_empty() {
        return Ok(Reservation {
            held: Vec::new(),
            tokens,
            cost_micro,
        });
    }
    let held = checks
        .iter()
        .map(|c| (c.scope.clone(), c.period.clone()))
        .collect();
    let refused = store::reserve(counters, checks).await.unwrap_or_else(|e| {
        // A database failure must not open the budget: refuse.
        tracing::error!(error = %e, "gateway: cannot reserve");
        Some(0)
    });
    if let Some(i) = refused {
        let (what, ends) = what.swap_remove(i);
        return Err(Exceeded {
            what,
            retry_after_secs: ((ends - now) / 1000).max(1) as u64,
        });
    }
    Ok(Reservation {
        held,
        tokens,
        cost_micro,
    })
}

/// What the recorder needs once an answer has gone out.
#[derive(Debug)]
pub struct Served {
    pub caller: Caller,
    pub model: String,
    pub target: String,
    /// The upstream model name (for the price).
    pub upstream_model: String,
    pub status: u16,
    pub reservation: Reservation,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Keep a 200 JSON answer under this cache key until this time.
    pub cache: Option<(String, i64)>,
    /// The answer's body, when it is to be cached.
    pub body: Option<Vec<u8>>,
}

/// Reads an answer's usage as it streams past: the `usage` object of a JSON body, or of
/// the last server-sent event that carried one. Sent to the recorder when dropped (the
/// answer ended, or the caller went away).
pub struct Meter {
    served: Option<Served>,
    tx: mpsc::UnboundedSender<Served>,
    pending: Vec<u8>,
    /// The body is JSON (read whole, up to a limit) rather than events.
    json: bool,
}

/// A JSON answer larger than this is not read for usage.
const MAX_JSON: usize = 4 * 1024 * 1024;

impl Meter {
    pub fn new(served: Served, tx: mpsc::UnboundedSender<Served>, json: bool) -> Meter {
        Meter {
            served: Some(served),
            tx,
            pending: Vec::new(),
            json,
        }
    }

    pub fn observe(&mut self, chunk: &Bytes) {
        if self.json {
            if self.pending.len() + chunk.len() <= MAX_JSON {
                self.pending.extend_from_slice(chunk);
            }
            return;
        }
        self.pending.extend_from_slice(chunk);
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            for line in text.lines() {
                if let Some(data) = line.strip_prefix("data:")
                    && data.contains("\"usage\"")
                    && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                {
                    self.take_usage(&v["usage"]);
                }
            }
        }
    }

    fn take_usage(&mut self, usage: &Value) {
        if let Some(s) = &mut self.served
            && usage.is_object()
        {
            s.prompt_tokens = usage["prompt_tokens"].as_i64().unwrap_or(s.prompt_tokens);
            s.completion_tokens = usage["completion_tokens"]
                .as_i64()
                .unwrap_or(s.completion_tokens);
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.json
            && let Ok(v) = serde_json::from_slice::<Value>(&self.pending)
        {
            self.take_usage(&v["usage"].clone());
            if let Some(s) = &mut self.served
                && s.cache.is_some()
                && s.status == 200
            {
                s.body = Some(std::mem::take(&mut self.pending));
            }
        }
        if let Some(served) = self.served.take() {
            let _ = self.tx.send(served);
        }
    }
}

/// How long the recorder gathers answers before writing them.
const GATHER: std::time::Duration = std::time::Duration::from_millis(50);

/// The most answers one transaction records.
const MAX_BATCH: usize = 512;

/// The recorder: settles reservations, writes usage rows and keeps answers for the cache,
/// a batch of requests per transaction.
pub fn spawn_recorder(
    counters: store::Counters,
    config: impl Fn() -> GatewayConfig + Send + 'static,
) -> mpsc::UnboundedSender<Served> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Served>();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            // Gather what arrives in the next moments: under load one transaction then holds
            // hundreds of answers instead of one or two (a commit costs more than a row).
            // Asleep rather than waiting on the channel, so an answer sent meanwhile does not
            // wake this task: waking it for each answer cost 4.3 context switches per request
            // against 3.7 (bench/README.md, the gateway).
            tokio::time::sleep(GATHER).await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let config = config();
            let now = now_ms();
            let mut settled = store::Settlement::default();
            for mut s in batch.drain(..) {
                if let (Some((key, expires)), Some(body)) = (s.cache.take(), s.body.take()) {
                    settled.cache.push(store::CacheEntry {
                        key,
                        model: s.model.clone(),
                        body,
                        expires_ms: expires,
                    });
                }
                let actual = cost(
                    &config,
                    &s.upstream_model,
                    s.prompt_tokens,
                    s.completion_tokens,
                );
                let tokens = s.prompt_tokens + s.completion_tokens;
                for (scope, period) in &s.reservation.held {
                    let (dt, dc) = if period.starts_with("m:") {
                        (tokens - s.reservation.tokens, 0)
                    } else {
                        (0, actual - s.reservation.cost_micro)
                    };
                    let entry = settled
                        .adjust
                        .entry((scope.clone(), period.clone()))
                        .or_default();
                    entry.0 += dt;
                    entry.1 += dc;
                }
                settled.rows.push(UsageRow {
                    at_ms: now,
                    day: day_of(now),
                    caller: s.caller.label(),
                    user_id: s.caller.user_id.clone(),
                    org_id: s.caller.org_id.clone(),
                    key_id: s.caller.key_id.clone(),
                    model: s.model,
                    target: s.target,
                    prompt_tokens: s.prompt_tokens,
                    completion_tokens: s.completion_tokens,
                    cost_micro: actual,
                    status: i32::from(s.status),
                });
            }
            // One transaction for the whole batch, however many requests it holds.
            if let Err(e) = store::settle(&counters, settled, now).await {
                tracing::error!(error = %e, "gateway: cannot record usage");
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months_are_computed_in_utc() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(1_798_761_599_000), "2026-12-31");
        let [_, day, month] = periods(1_798_761_599_000);
        assert_eq!(day.0, "d:2026-12-31");
        assert_eq!(month.0, "M:2026-12");
        assert_eq!(
            month.1, 1_798_761_600_000,
            "the month ends at 2027-01-01T00:00Z"
        );
        assert_eq!(days_from_civil(2000, 2, 29) * 86_400_000, 951_782_400_000);
    }
}

//! SQL functions every O1 connection has, so translated migrations and the Data API's SQL mean
//! on SQLite what they mean on Postgres:
//!
//! - `reactor_uuid()` — `gen_random_uuid()`;
//! - `reactor_now()` — `now()`, as Postgres renders a `timestamptz` in JSON;
//! - `reactor_like(value, pattern, ci)` — `like` (`ci = 0`, case-sensitive as on Postgres,
//!   unlike SQLite's own) and `ilike` (`ci = 1`), with `%`, `_` and `\` escapes;
//! - `reactor_regexp(value, pattern, ci)` — `~` and `~*`;
//! - `reactor_fts(document, query, function)` — the `fts` filters, word-based: no stemming or
//!   stop words (Postgres's dictionaries are not available on O1).

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};

pub(crate) fn register(conn: &Connection) -> rusqlite::Result<()> {
    let volatile = FunctionFlags::SQLITE_UTF8;
    let pure = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("reactor_uuid", 0, volatile, |_| {
        Ok(uuid::Uuid::new_v4().to_string())
    })?;
    conn.create_scalar_function("reactor_now", 0, volatile, |_| Ok(now_utc()))?;
    conn.create_scalar_function("reactor_like", 3, pure, |ctx| {
        let (Some(value), Some(pattern)) = (text(ctx, 0)?, text(ctx, 1)?) else {
            return Ok(None);
        };
        let ci = ctx.get::<i64>(2)? != 0;
        Ok(Some(like(&value, &pattern, ci)))
    })?;
    let cache: Mutex<HashMap<(String, bool), regex::Regex>> = Mutex::new(HashMap::new());
    conn.create_scalar_function("reactor_regexp", 3, pure, move |ctx| {
        let (Some(value), Some(pattern)) = (text(ctx, 0)?, text(ctx, 1)?) else {
            return Ok(None);
        };
        let ci = ctx.get::<i64>(2)? != 0;
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() > 64 {
            cache.clear();
        }
        let key = (pattern.clone(), ci);
        if !cache.contains_key(&key) {
            let re = regex::RegexBuilder::new(&pattern)
                .case_insensitive(ci)
                .build()
                .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?;
            cache.insert(key.clone(), re);
        }
        Ok(cache.get(&key).map(|re| re.is_match(&value)))
    })?;
    conn.create_scalar_function("reactor_json_contains", 2, pure, |ctx| {
        let (Some(a), Some(b)) = (text(ctx, 0)?, text(ctx, 1)?) else {
            return Ok(None);
        };
        let parse = |t: &str| {
            serde_json::from_str::<serde_json::Value>(t)
                .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
        };
        Ok(Some(json_contains(&parse(&a)?, &parse(&b)?, true)))
    })?;
    conn.create_scalar_function("reactor_fts", 3, pure, |ctx| {
        let (Some(doc), Some(query)) = (text(ctx, 0)?, text(ctx, 1)?) else {
            return Ok(None);
        };
        let function = text(ctx, 2)?.unwrap_or_default();
        Ok(Some(fts(&doc, &query, &function)))
    })?;
    Ok(())
}

/// The current time as Postgres writes a `timestamptz` in JSON (UTC, microseconds).
pub fn now_utc() -> String {
    let (y, mo, d, h, mi, sec, micros) = reactor_core::time::utc_now();
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{micros:06}+00:00")
}

fn text(ctx: &Context, i: usize) -> rusqlite::Result<Option<String>> {
    use rusqlite::types::ValueRef;
    Ok(match ctx.get_raw(i) {
        ValueRef::Null => None,
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
    })
}

/// Postgres's LIKE: `%` any run, `_` one character, `\` escapes the next.
pub fn like(value: &str, pattern: &str, case_insensitive: bool) -> bool {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Tok {
        Any,
        One,
        Char(char),
    }
    let fold = |s: &str| -> Vec<char> {
        if case_insensitive {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let value = fold(value);
    let mut toks = Vec::new();
    let mut chars = fold(pattern).into_iter();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '%' => Tok::Any,
            '_' => Tok::One,
            '\\' => Tok::Char(chars.next().unwrap_or('\\')),
            c => Tok::Char(c),
        });
    }
    // Greedy matching with one backtrack point per `%`.
    let (mut v, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match toks.get(p) {
            Some(Tok::Char(c)) if *c == value[v] => {
                v += 1;
                p += 1;
            }
            Some(Tok::One) => {
                v += 1;
                p += 1;
            }
            Some(Tok::Any) => {
                star = Some((p, v));
                p += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    p = sp + 1;
                    v = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Any)
}

/// jsonb's `@>`: objects contain objects key by key, arrays contain arrays element by element
/// (in any order), and at the top level an array contains a bare scalar it holds.
pub fn json_contains(a: &serde_json::Value, b: &serde_json::Value, top: bool) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Object(a), J::Object(b)) => b
            .iter()
            .all(|(k, bv)| a.get(k).is_some_and(|av| json_contains(av, bv, false))),
        (J::Array(a), J::Array(b)) => b
            .iter()
            .all(|bv| a.iter().any(|av| json_contains(av, bv, false))),
        (J::Array(a), scalar) if top && !scalar.is_object() => a.iter().any(|av| av == scalar),
        (a, b) => a == b,
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn has_phrase(doc: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && doc.windows(phrase.len()).any(|w| w == phrase)
}

/// Word matching in the spirit of each tsquery function.
pub fn fts(doc: &str, query: &str, function: &str) -> bool {
    let doc = words(doc);
    let has = |term: &str| match term.strip_suffix(":*") {
        Some(prefix) => {
            let prefix = prefix.to_lowercase();
            doc.iter().any(|w| w.starts_with(&prefix))
        }
        None => {
            let t = words(term);
            has_phrase(&doc, &t)
        }
    };
    match function {
        "plainto_tsquery" => words(query).iter().all(|w| doc.contains(w)),
        "phraseto_tsquery" => has_phrase(&doc, &words(query)),
        "websearch_to_tsquery" => query.split(" or ").any(|alternative| {
            let mut rest = alternative.to_string();
            let mut ok = true;
            // "quoted phrases" first
            while let (Some(a), Some(b)) = (
                rest.find('"'),
                rest[rest.find('"').map_or(0, |a| a + 1)..].find('"'),
            ) {
                let phrase = rest[a + 1..a + 1 + b].to_string();
                ok &= has_phrase(&doc, &words(&phrase));
                rest.replace_range(a..a + b + 2, " ");
            }
            for term in rest.split_whitespace() {
                ok &= match term.strip_prefix('-') {
                    Some(t) => !has(t),
                    None => has(term),
                };
            }
            ok
        }),
        // to_tsquery: `|` alternatives of `&` conjunctions, `!` negation, `:*` prefixes.
        _ => query
            .replace(['(', ')'], " ")
            .split('|')
            .any(|alternative| {
                alternative
                    .split('&')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .all(|t| match t.strip_prefix('!') {
                        Some(t) => !has(t.trim()),
                        None => has(t),
                    })
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_follows_postgres() {
        assert!(like("The Dispossessed", "The%", false));
        assert!(!like("The Dispossessed", "the%", false));
        assert!(like("The Dispossessed", "the%", true));
        assert!(like("Solaris", "%ol%", false));
        assert!(like("Solaris", "S_laris", false));
        assert!(!like("Solaris", "S_aris", false));
        assert!(like("100%", "100\\%", false));
        assert!(!like("1000", "100\\%", false));
        assert!(like("", "%", false));
        assert!(like("abcabc", "%abc", false));
    }

    #[test]
    fn now_looks_like_postgres() {
        let now = now_utc();
        assert_eq!(now.len(), "2026-11-26T12:00:00.000000+00:00".len(), "{now}");
        assert!(
            now.ends_with("+00:00") && now.as_bytes()[10] == b'T',
            "{now}"
        );
        assert!(
            now.as_str() > "2025-01-01" && now.as_str() < "2100-01-01",
            "{now}"
        );
    }

    #[test]
    fn json_containment_like_jsonb() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("json");
        assert!(json_contains(
            &j(r#"{"n":3,"a":[1,2]}"#),
            &j(r#"{"n":3}"#),
            true
        ));
        assert!(json_contains(
            &j(r#"{"n":3,"a":[1,2]}"#),
            &j(r#"{"a":[2]}"#),
            true
        ));
        assert!(!json_contains(&j(r#"{"n":3}"#), &j(r#"{"n":4}"#), true));
        assert!(json_contains(&j("[1,2,3]"), &j("2"), true));
        assert!(!json_contains(&j(r#"{"a":[1,2]}"#), &j(r#"{"a":2}"#), true));
    }

    #[test]
    fn fts_forms() {
        let doc = "A Wizard of Earthsea: the wizard's tale";
        assert!(fts(doc, "wizard & earthsea", "to_tsquery"));
        assert!(!fts(doc, "wizard & dragon", "to_tsquery"));
        assert!(fts(doc, "dragon | wiz:*", "to_tsquery"));
        assert!(
            fts(doc, "wizard !dragon", "plainto_tsquery")
                || fts(doc, "wizard & !dragon", "to_tsquery")
        );
        assert!(fts(doc, "of earthsea", "phraseto_tsquery"));
        assert!(!fts(doc, "earthsea of", "phraseto_tsquery"));
        assert!(fts(doc, "\"wizard of\" -dragon", "websearch_to_tsquery"));
        assert!(!fts(doc, "wizard -earthsea", "websearch_to_tsquery"));
    }
}

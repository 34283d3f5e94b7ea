//! PostgREST's URL grammar, parsed into an AST and nothing more: no schema, no SQL.
//!
//! `select=id,alias:col::text,data->a->>b,author(name),tags!inner(*)`, filters
//! `col=not.eq.value`, `col=like(any).{a*,b*}`, `or=(a.eq.1,and(b.gt.2,c.is.null))`,
//! `order=col.desc.nullslast`, `limit`, `offset`, and their embedded forms
//! (`author.name=eq.x`, `author.order=…`). A grammar error names the parameter and the column
//! where parsing stopped, as PostgREST's `PGRST100` does.

use std::fmt;

/// One item of `select=`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SelectItem {
    Star,
    Field {
        alias: Option<String>,
        field: Field,
        cast: Option<String>,
    },
    Embed(Embed),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Embed {
    pub alias: Option<String>,
    pub relation: String,
    pub hint: Option<String>,
    pub inner: bool,
    pub select: Vec<SelectItem>,
}

/// A column, possibly followed by a JSON path (`data->a->>b`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    pub name: String,
    pub path: Vec<JsonStep>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonStep {
    /// `->>` (text) rather than `->` (json).
    pub text: bool,
    pub key: JsonKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JsonKey {
    Name(String),
    Index(i64),
}

impl Field {
    /// The name PostgREST gives the output: the last JSON key, else the column.
    pub fn output_name(&self) -> String {
        match self.path.last() {
            Some(JsonStep {
                key: JsonKey::Name(k),
                ..
            }) => k.clone(),
            Some(JsonStep {
                key: JsonKey::Index(i),
                ..
            }) => i.to_string(),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    Ilike,
    Match,
    Imatch,
    In,
    Is,
    IsDistinct,
    Cs,
    Cd,
    Ov,
    Sl,
    Sr,
    Nxr,
    Nxl,
    Adj,
    Fts,
    Plfts,
    Phfts,
    Wfts,
}

impl Op {
    fn parse(word: &str) -> Option<Op> {
        Some(match word {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "like" => Op::Like,
            "ilike" => Op::Ilike,
            "match" => Op::Match,
            "imatch" => Op::Imatch,
            "in" => Op::In,
            "is" => Op::Is,
            "isdistinct" => Op::IsDistinct,
            "cs" => Op::Cs,
            "cd" => Op::Cd,
            "ov" => Op::Ov,
            "sl" => Op::Sl,
            "sr" => Op::Sr,
            "nxr" => Op::Nxr,
            "nxl" => Op::Nxl,
            "adj" => Op::Adj,
            "fts" => Op::Fts,
            "plfts" => Op::Plfts,
            "phfts" => Op::Phfts,
            "wfts" => Op::Wfts,
            _ => return None,
        })
    }

    /// Operators that take `(any)` / `(all)`.
    fn quantifiable(self) -> bool {
        matches!(
            self,
            Op::Eq
                | Op::Neq
                | Op::Gt
                | Op::Gte
                | Op::Lt
                | Op::Lte
                | Op::Like
                | Op::Ilike
                | Op::Match
                | Op::Imatch
        )
    }

    pub fn is_fts(self) -> bool {
        matches!(self, Op::Fts | Op::Plfts | Op::Phfts | Op::Wfts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantifier {
    Any,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsValue {
    Null,
    NotNull,
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operand {
    Value(String),
    List(Vec<String>),
    Is(IsValue),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    pub field: Field,
    pub negated: bool,
    pub op: Op,
    pub quantifier: Option<Quantifier>,
    /// The text-search configuration of `fts(english)`.
    pub language: Option<String>,
    pub operand: Operand,
}

/// A boolean tree of filters, from `or=()`/`and=()` or from the plain parameters (an `and`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Condition {
    Filter(Filter),
    Logic {
        or: bool,
        negated: bool,
        children: Vec<Condition>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Nulls {
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderTerm {
    /// `order=author(name)`: a column of a to-one embed.
    pub relation: Option<String>,
    pub field: Field,
    pub desc: bool,
    pub nulls: Option<Nulls>,
}

/// A grammar error: which parameter, where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub param: String,
    pub value: String,
    /// 1-based character position in the value.
    pub column: usize,
    pub expected: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "failed to parse {} parameter ({}) at column {}: {}",
            self.param, self.value, self.column, self.expected
        )
    }
}

impl std::error::Error for ParseError {}

/// A cursor over one parameter's value.
struct Cursor<'a> {
    param: &'a str,
    src: &'a str,
    pos: usize,
    /// How many embeds or logic groups enclose the cursor.
    depth: usize,
}

/// The deepest nesting of embeds, or of `or()`/`and()` groups, a request may ask for. The
/// parser recurses once per level: without a bound, a crafted query string could exhaust the
/// stack; no real request comes near it.
pub const MAX_DEPTH: usize = 16;

type Parsed<T> = Result<T, ParseError>;

impl<'a> Cursor<'a> {
    fn new(param: &'a str, src: &'a str) -> Self {
        Cursor {
            param,
            src,
            pos: 0,
            depth: 0,
        }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn done(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// Enters one more level of nesting, refusing past [`MAX_DEPTH`].
    fn descend(&mut self) -> Parsed<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(' ') {
            self.pos += 1;
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str) -> Parsed<()> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(self.error(format!("expected \"{s}\"")))
        }
    }

    fn error(&self, expected: impl Into<String>) -> ParseError {
        let found = match self.peek() {
            Some(c) => format!("unexpected \"{c}\", "),
            None => "unexpected end of input, ".to_string(),
        };
        ParseError {
            param: self.param.to_string(),
            value: self.src.to_string(),
            column: self.src[..self.pos].chars().count() + 1,
            expected: format!("{found}{}", expected.into()),
        }
    }

    /// An identifier: letters, digits, `_`, `$`, and anything non-ASCII; or a double-quoted
    /// name with `""` for a quote.
    fn ident(&mut self) -> Parsed<String> {
        if self.eat("\"") {
            let mut out = String::new();
            loop {
                match self.peek() {
                    None => return Err(self.error("expected a closing quote")),
                    Some('"') => {
                        self.pos += 1;
                        if self.eat("\"") {
                            out.push('"');
                        } else {
                            return Ok(out);
                        }
                    }
                    Some(c) => {
                        out.push(c);
                        self.pos += c.len_utf8();
                    }
                }
            }
        }
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' || c == '$' || c == ' ' && self.pos > start {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        let word = self.src[start..self.pos].trim_end();
        self.pos = start + word.len();
        if word.is_empty() {
            return Err(self.error("expected a name"));
        }
        Ok(word.to_string())
    }

    /// `name` followed by `->key` / `->>key` steps.
    fn field(&mut self) -> Parsed<Field> {
        let name = self.ident()?;
        let mut path = Vec::new();
        while self.rest().starts_with("->") {
            let text = self.eat("->>") || {
                self.pos += 2;
                false
            };
            let key = if self.peek() == Some('-') || self.peek().is_some_and(|c| c.is_ascii_digit())
            {
                let start = self.pos;
                self.eat("-");
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                let digits = &self.src[start..self.pos];
                match digits.parse::<i64>() {
                    Ok(i) => JsonKey::Index(i),
                    Err(_) => return Err(self.error("expected an array index")),
                }
            } else {
                JsonKey::Name(self.ident()?)
            };
            path.push(JsonStep { text, key });
        }
        Ok(Field { name, path })
    }
}

/// Parses `select=`.
pub fn parse_select(param: &str, value: &str) -> Parsed<Vec<SelectItem>> {
    let mut c = Cursor::new(param, value);
    let items = select_list(&mut c)?;
    if !c.done() {
        return Err(c.error("expected \",\" or the end"));
    }
    Ok(items)
}

fn select_list(c: &mut Cursor) -> Parsed<Vec<SelectItem>> {
    let mut items = vec![select_item(c)?];
    while c.eat(",") {
        items.push(select_item(c)?);
    }
    Ok(items)
}

fn select_item(c: &mut Cursor) -> Parsed<SelectItem> {
    c.skip_spaces();
    let item = select_item_inner(c)?;
    c.skip_spaces();
    Ok(item)
}

fn select_item_inner(c: &mut Cursor) -> Parsed<SelectItem> {
    if c.eat("*") {
        return Ok(SelectItem::Star);
    }
    let first = c.field()?;
    let (alias, field) = if first.path.is_empty() && c.eat(":") && !c.rest().starts_with(':') {
        (Some(first.name), c.field()?)
    } else {
        (None, first)
    };
    if c.peek() == Some('!') || c.peek() == Some('(') {
        if !field.path.is_empty() {
            return Err(c.error("expected a relation name before \"(\""));
        }
        let mut hint = None;
        let mut inner = false;
        while c.eat("!") {
            let word = c.ident()?;
            match word.as_str() {
                "inner" => inner = true,
                "left" => inner = false,
                _ if hint.is_none() => hint = Some(word),
                _ => return Err(c.error("expected \"inner\" or \"left\"")),
            }
        }
        c.expect("(")?;
        c.descend()?;
        let select = if c.peek() == Some(')') {
            Vec::new()
        } else {
            select_list(c)?
        };
        c.expect(")")?;
        c.depth -= 1;
        return Ok(SelectItem::Embed(Embed {
            alias,
            relation: field.name,
            hint,
            inner,
            select,
        }));
    }
    let cast = if c.eat("::") { Some(c.ident()?) } else { None };
    Ok(SelectItem::Field { alias, field, cast })
}

/// Parses a filter's value: `[not.]op[(any|all)|(lang)].operand`.
pub fn parse_filter(param: &str, field: Field, value: &str) -> Parsed<Filter> {
    let mut c = Cursor::new(param, value);
    let filter = filter_body(&mut c, field, false)?;
    Ok(filter)
}

/// `in_logic`: inside `or=(…)` the operand ends at `,` or `)` unless quoted.
fn filter_body(c: &mut Cursor, field: Field, in_logic: bool) -> Parsed<Filter> {
    let negated = c.eat("not.");
    let start = c.pos;
    while c.peek().is_some_and(|ch| ch.is_ascii_alphabetic()) {
        c.pos += 1;
    }
    let word = &c.src[start..c.pos];
    let Some(op) = Op::parse(word) else {
        c.pos = start;
        return Err(c.error("expected an operator (eq, neq, gt, gte, lt, lte, like, ilike, match, imatch, in, is, isdistinct, cs, cd, ov, sl, sr, nxr, nxl, adj, fts, plfts, phfts, wfts)"));
    };
    let mut quantifier = None;
    let mut language = None;
    if c.peek() == Some('(') {
        if op.quantifiable() && c.eat("(any)") {
            quantifier = Some(Quantifier::Any);
        } else if op.quantifiable() && c.eat("(all)") {
            quantifier = Some(Quantifier::All);
        } else if op.is_fts() {
            c.pos += 1;
            language = Some(c.ident()?);
            c.expect(")")?;
        } else {
            return Err(c.error("expected \".\""));
        }
    }
    c.expect(".")?;
    let operand = if op == Op::Is {
        let start = c.pos;
        let word = scalar(c, in_logic)?;
        let is = match word.to_ascii_lowercase().as_str() {
            "null" => IsValue::Null,
            "not_null" => IsValue::NotNull,
            "true" => IsValue::True,
            "false" => IsValue::False,
            "unknown" => IsValue::Unknown,
            _ => {
                c.pos = start;
                return Err(c.error("expected null, not_null, true, false or unknown"));
            }
        };
        Operand::Is(is)
    } else if op == Op::In || quantifier.is_some() {
        let (open, close) = if c.peek() == Some('{') {
            ("{", "}")
        } else {
            ("(", ")")
        };
        c.expect(open)?;
        let mut items = Vec::new();
        if !c.eat(close) {
            loop {
                items.push(list_item(c, close)?);
                if c.eat(close) {
                    break;
                }
                c.expect(",")?;
            }
        }
        Operand::List(items)
    } else {
        Operand::Value(scalar(c, in_logic)?)
    };
    if !in_logic && !c.done() {
        return Err(c.error("expected the end of the value"));
    }
    Ok(Filter {
        field,
        negated,
        op,
        quantifier,
        language,
        operand,
    })
}

/// A value: the rest of the parameter, or inside a logic tree up to `,`/`)` (a double-quoted
/// value may hold both; `\"` and `\\` escape). Arrays and ranges (`{a,b}`, `[1,5)`) keep their
/// brackets balanced.
fn scalar(c: &mut Cursor, in_logic: bool) -> Parsed<String> {
    if !in_logic {
        let v = c.rest().to_string();
        c.pos = c.src.len();
        return Ok(v);
    }
    if c.peek() == Some('"') {
        return quoted(c);
    }
    let start = c.pos;
    let mut depth = 0i32;
    while let Some(ch) = c.peek() {
        match ch {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            '(' if depth > 0 => depth += 1,
            ')' if depth > 0 => depth -= 1,
            ',' | ')' if depth <= 0 => break,
            _ => {}
        }
        c.pos += ch.len_utf8();
    }
    Ok(c.src[start..c.pos].to_string())
}

fn quoted(c: &mut Cursor) -> Parsed<String> {
    c.expect("\"")?;
    let mut out = String::new();
    loop {
        match c.peek() {
            None => return Err(c.error("expected a closing quote")),
            Some('\\') => {
                c.pos += 1;
                match c.peek() {
                    Some(ch) => {
                        out.push(ch);
                        c.pos += ch.len_utf8();
                    }
                    None => return Err(c.error("expected a character after \"\\\"")),
                }
            }
            Some('"') => {
                c.pos += 1;
                return Ok(out);
            }
            Some(ch) => {
                out.push(ch);
                c.pos += ch.len_utf8();
            }
        }
    }
}

fn list_item(c: &mut Cursor, close: &str) -> Parsed<String> {
    if c.peek() == Some('"') {
        return quoted(c);
    }
    let start = c.pos;
    while let Some(ch) = c.peek() {
        if ch == ',' || close.starts_with(ch) {
            break;
        }
        c.pos += ch.len_utf8();
    }
    Ok(c.src[start..c.pos].trim().to_string())
}

/// Parses `or=(…)` / `and=(…)` (the caller knows which, and whether `not.` preceded).
pub fn parse_logic(param: &str, or: bool, negated: bool, value: &str) -> Parsed<Condition> {
    let mut c = Cursor::new(param, value);
    let children = logic_children(&mut c)?;
    if !c.done() {
        return Err(c.error("expected the end after \")\""));
    }
    Ok(Condition::Logic {
        or,
        negated,
        children,
    })
}

fn logic_children(c: &mut Cursor) -> Parsed<Vec<Condition>> {
    c.expect("(")?;
    c.descend()?;
    let mut children = Vec::new();
    loop {
        children.push(logic_item(c)?);
        if c.eat(")") {
            c.depth -= 1;
            return Ok(children);
        }
        c.expect(",")?;
    }
}

fn logic_item(c: &mut Cursor) -> Parsed<Condition> {
    let save = c.pos;
    let negated = c.eat("not.");
    for (word, or) in [("or(", true), ("and(", false)] {
        if c.rest().starts_with(word) {
            c.pos += word.len() - 1;
            let children = logic_children(c)?;
            return Ok(Condition::Logic {
                or,
                negated,
                children,
            });
        }
    }
    c.pos = save;
    let field = c.field()?;
    c.expect(".")?;
    Ok(Condition::Filter(filter_body(c, field, true)?))
}

/// Parses `order=`.
pub fn parse_order(param: &str, value: &str) -> Parsed<Vec<OrderTerm>> {
    let mut c = Cursor::new(param, value);
    let mut terms = Vec::new();
    loop {
        let first = c.field()?;
        let (relation, field) = if first.path.is_empty() && c.eat("(") {
            let f = c.field()?;
            c.expect(")")?;
            (Some(first.name), f)
        } else {
            (None, first)
        };
        let mut term = OrderTerm {
            relation,
            field,
            desc: false,
            nulls: None,
        };
        while c.eat(".") {
            let start = c.pos;
            let word = c.ident()?;
            match word.as_str() {
                "asc" => term.desc = false,
                "desc" => term.desc = true,
                "nullsfirst" => term.nulls = Some(Nulls::First),
                "nullslast" => term.nulls = Some(Nulls::Last),
                _ => {
                    c.pos = start;
                    return Err(c.error("expected asc, desc, nullsfirst or nullslast"));
                }
            }
        }
        terms.push(term);
        if c.done() {
            return Ok(terms);
        }
        c.expect(",")?;
    }
}

/// Parses a filter parameter's name: `col`, `data->>a`, or `embed.path.col`.
pub fn parse_filter_key(key: &str) -> Parsed<(Vec<String>, Field)> {
    let mut c = Cursor::new(key, key);
    let mut parts = vec![c.field()?];
    while c.eat(".") {
        parts.push(c.field()?);
    }
    if !c.done() {
        return Err(c.error("expected a column name"));
    }
    let field = parts
        .pop()
        .ok_or_else(|| c.error("expected a column name"))?;
    let mut path = Vec::new();
    for p in parts {
        if !p.path.is_empty() {
            return Err(c.error("expected an embedded resource name"));
        }
        path.push(p.name);
    }
    Ok((path, field))
}

/// Parses a non-negative integer parameter (`limit`, `offset`).
pub fn parse_count(param: &str, value: &str) -> Parsed<u64> {
    value.parse::<u64>().map_err(|_| ParseError {
        param: param.to_string(),
        value: value.to_string(),
        column: 1,
        expected: "expected a non-negative integer".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str) -> Field {
        Field {
            name: name.into(),
            path: vec![],
        }
    }

    #[test]
    fn select_with_aliases_casts_paths_and_embeds() {
        let items = parse_select(
            "select",
            "id,title:name::text,data->a->>b,author:users!owner!inner(id,*),tags()",
        )
        .expect("parses");
        assert_eq!(items.len(), 5);
        assert_eq!(
            items[1],
            SelectItem::Field {
                alias: Some("title".into()),
                field: field("name"),
                cast: Some("text".into())
            }
        );
        let SelectItem::Field { field: f, .. } = &items[2] else {
            panic!("field")
        };
        assert_eq!(f.output_name(), "b");
        assert!(f.path[1].text && !f.path[0].text);
        let SelectItem::Embed(e) = &items[3] else {
            panic!("embed")
        };
        assert_eq!(e.alias.as_deref(), Some("author"));
        assert_eq!(e.relation, "users");
        assert_eq!(e.hint.as_deref(), Some("owner"));
        assert!(e.inner);
        assert_eq!(
            e.select,
            vec![
                SelectItem::Field {
                    alias: None,
                    field: field("id"),
                    cast: None
                },
                SelectItem::Star
            ]
        );
        let SelectItem::Embed(e) = &items[4] else {
            panic!("embed")
        };
        assert!(e.select.is_empty());
    }

    #[test]
    fn select_errors_name_the_column() {
        let e = parse_select("select", "id,,name").expect_err("empty item");
        assert_eq!(e.column, 4);
        assert!(e.to_string().contains("select parameter (id,,name)"), "{e}");
        let e = parse_select("select", "author(id").expect_err("unclosed");
        assert_eq!(e.column, 10);
    }

    #[test]
    fn filters_with_modifiers_lists_and_negation() {
        let f = parse_filter("age", field("age"), "not.gte.18").expect("parses");
        assert!(f.negated);
        assert_eq!(f.op, Op::Gte);
        assert_eq!(f.operand, Operand::Value("18".into()));
        let f = parse_filter("name", field("name"), "like(any).{a*,\"b,c\"}").expect("parses");
        assert_eq!(f.quantifier, Some(Quantifier::Any));
        assert_eq!(f.operand, Operand::List(vec!["a*".into(), "b,c".into()]));
        let f = parse_filter("id", field("id"), "in.(1, 2,3)").expect("parses");
        assert_eq!(
            f.operand,
            Operand::List(vec!["1".into(), "2".into(), "3".into()])
        );
        let f = parse_filter("x", field("x"), "is.not_null").expect("parses");
        assert_eq!(f.operand, Operand::Is(IsValue::NotNull));
        let f = parse_filter("body", field("body"), "fts(english).cat & dog").expect("parses");
        assert_eq!(f.language.as_deref(), Some("english"));
        assert_eq!(f.operand, Operand::Value("cat & dog".into()));
        // Everything after the operator is the value, dots and commas included.
        let f = parse_filter("v", field("v"), "eq.a.b,c").expect("parses");
        assert_eq!(f.operand, Operand::Value("a.b,c".into()));
        let e = parse_filter("v", field("v"), "equals.1").expect_err("unknown operator");
        assert_eq!(e.column, 1);
        let e = parse_filter("v", field("v"), "is.maybe").expect_err("bad is");
        assert_eq!(e.column, 4);
        assert!(parse_filter("v", field("v"), "eq(any).1").is_err());
    }

    #[test]
    fn nested_logic_trees() {
        let c = parse_logic(
            "or",
            true,
            false,
            "(a.eq.1,and(b.gt.2,c.not.is.null),d.in.(1,2),e.eq.\"x,)\")",
        )
        .expect("parses");
        let Condition::Logic { or, children, .. } = c else {
            panic!("logic")
        };
        assert!(or);
        assert_eq!(children.len(), 4);
        let Condition::Logic {
            or: inner_or,
            children: inner,
            ..
        } = &children[1]
        else {
            panic!("nested")
        };
        assert!(!inner_or);
        assert_eq!(inner.len(), 2);
        let Condition::Filter(f) = &children[3] else {
            panic!("filter")
        };
        assert_eq!(f.operand, Operand::Value("x,)".into()));
        let e = parse_logic("or", true, false, "(a.eq.1").expect_err("unclosed");
        assert_eq!(e.column, 8);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep_select = format!(
            "{}id{}",
            "a(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let e = parse_select("select", &deep_select).expect_err("too deep");
        assert!(e.expected.contains("nesting"), "{e}");
        let ok = format!("{}id{}", "a(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse_select("select", &ok).is_ok());
        // Far past any stack: refused quickly, not a crash.
        let huge = format!("({}a.eq.1{})", "or(".repeat(100_000), ")".repeat(100_000));
        assert!(parse_logic("or", true, false, &huge).is_err());
    }

    #[test]
    fn order_terms() {
        let terms =
            parse_order("order", "name.desc.nullslast,id,author(name).asc").expect("parses");
        assert_eq!(terms.len(), 3);
        assert!(terms[0].desc);
        assert_eq!(terms[0].nulls, Some(Nulls::Last));
        assert_eq!(terms[2].relation.as_deref(), Some("author"));
        let e = parse_order("order", "name.up").expect_err("bad direction");
        assert_eq!(e.column, 6);
    }

    #[test]
    fn filter_keys_split_embed_paths() {
        let (path, f) = parse_filter_key("author.books.title").expect("parses");
        assert_eq!(path, vec!["author", "books"]);
        assert_eq!(f.name, "title");
        let (path, f) = parse_filter_key("data->>kind").expect("parses");
        assert!(path.is_empty());
        assert_eq!(f.output_name(), "kind");
    }
}

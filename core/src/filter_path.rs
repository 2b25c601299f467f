//! Endpoint content filters: which SQL/JSON path predicates a tenant's admin may write, and
//! what one costs. A filter is evaluated on every event of its tenant that the endpoint
//! subscribes to, in the publishing transaction (and for operational events in the worker's
//! expansion of them, never while it records outcomes),
//! by PostgreSQL's own jsonpath engine. That engine's time is the product of the sizes of the
//! sequences a path makes, and some constructs multiply: `.**` enumerates every node and a
//! nested one every node below each of those (six levels took 1.9 s on one envelope), `$`
//! inside a filter starts again from the root for every item, and a comparison of two paths
//! compares every pair of their items (lax mode unwraps arrays on both sides), and a
//! subscript list or `.keyvalue()` repeats items (`[0,0]` twice in a row makes four of one).
//! So a filter is refused unless it keeps to constructs whose cost is at most linear in the
//! event's size: each path visits each node of the event a bounded number of times, whatever
//! its wildcards and nested filters. Its *weight* is the number of paths it evaluates, each
//! counted as many times as its items repeat and as the path around it runs, at most
//! `MAX_PATHS`; the work of one evaluation is then bounded by weight x event size, and the
//! callers skip (and deliver unfiltered) an event whose work would exceed `BUDGET`
//! (src/api.rs).
//!
//! Pure parsing of the text PostgreSQL prints for a jsonpath (`jsonpath_out`, which quotes
//! every key and parenthesises every binary operation it needs to), so it is checked the way
//! the engine will read it.

/// Paths one filter may evaluate at most.
pub const MAX_PATHS: usize = 16;
/// Filters inside filters, at most.
pub const MAX_NESTING: usize = 4;
/// Weight x event size (bytes) above which a filter is not evaluated on an event (it is
/// delivered as if it matched): 16 paths on an event of 256 KiB, the default max_payload, about
/// 10 ms on this project's 2-core benchmark machine (a path over 300 KB took 0.5-1 ms).
pub const BUDGET: i64 = 16 * 256 * 1024;
/// like_regex patterns, at most (bytes).
const MAX_PATTERN: usize = 256;

const METHODS: &[&str] = &[
    "type", "size", "double", "ceiling", "floor", "abs", "keyvalue", "bigint", "boolean",
    "integer", "number", "string", "decimal",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Dollar,
    At,
    Var(String),
    Last,
    Key(String),
    AnyKey,
    AnyLevel,
    LBracket,
    RBracket,
    Star,
    Comma,
    To,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Question,
    Op(&'static str),
    Word(String),
    Method(String),
    Str(String),
    Num,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let string = |i: &mut usize| -> Result<String, String> {
        // at the opening quote
        let mut v = String::new();
        *i += 1;
        let mut chars = s[*i..].char_indices();
        while let Some((k, c)) = chars.next() {
            match c {
                '"' => {
                    *i += k + 1;
                    return Ok(v);
                }
                '\\' => match chars.next() {
                    Some((_, 'u')) => {
                        let hex: String =
                            (0..4).filter_map(|_| chars.next().map(|x| x.1)).collect();
                        let code = u32::from_str_radix(&hex, 16).map_err(|_| "bad \\u escape")?;
                        v.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                    }
                    Some((_, 'n')) => v.push('\n'),
                    Some((_, 't')) => v.push('\t'),
                    Some((_, 'r')) => v.push('\r'),
                    Some((_, 'b')) => v.push('\u{8}'),
                    Some((_, 'f')) => v.push('\u{c}'),
                    Some((_, 'v')) => v.push('\u{b}'),
                    Some((_, x)) => v.push(x),
                    None => return Err("unterminated string".into()),
                },
                c => v.push(c),
            }
        }
        Err("unterminated string".into())
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' => i += 1,
            b'$' => {
                if b.get(i + 1) == Some(&b'"') {
                    i += 1;
                    out.push(Tok::Var(string(&mut i)?));
                } else if b.get(i + 1).is_some_and(|x| x.is_ascii_alphabetic()) {
                    return Err("a filter has no variables".into());
                } else {
                    out.push(Tok::Dollar);
                    i += 1;
                }
            }
            b'@' => {
                out.push(Tok::At);
                i += 1;
            }
            b'.' => {
                if s[i..].starts_with(".**") {
                    out.push(Tok::AnyLevel);
                    i += 3;
                } else if s[i..].starts_with(".*") {
                    out.push(Tok::AnyKey);
                    i += 2;
                } else if b.get(i + 1) == Some(&b'"') {
                    i += 1;
                    out.push(Tok::Key(string(&mut i)?));
                } else {
                    let start = i + 1;
                    let mut j = start;
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                        j += 1;
                    }
                    if j == start {
                        return Err(format!("unexpected '.' at {i}"));
                    }
                    let name = s[start..j].to_string();
                    if b.get(j) == Some(&b'(') {
                        out.push(Tok::Method(name));
                    } else {
                        // (jsonpath_out quotes keys; an unquoted one only comes from elsewhere)
                        out.push(Tok::Key(name));
                    }
                    i = j;
                }
            }
            b'"' => out.push(Tok::Str(string(&mut i)?)),
            b'[' => {
                out.push(Tok::LBracket);
                i += 1;
            }
            b']' => {
                out.push(Tok::RBracket);
                i += 1;
            }
            b'(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            b'{' => {
                out.push(Tok::LBrace);
                i += 1;
            }
            b'}' => {
                out.push(Tok::RBrace);
                i += 1;
            }
            b',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            b'?' => {
                out.push(Tok::Question);
                i += 1;
            }
            b'*' => {
                out.push(Tok::Star);
                i += 1;
            }
            _ if c.is_ascii_digit() => {
                let mut j = i;
                while j < b.len()
                    && (b[j].is_ascii_alphanumeric()
                        || b[j] == b'.'
                        || b[j] == b'_'
                        || ((b[j] == b'+' || b[j] == b'-') && matches!(b[j - 1], b'e' | b'E')))
                {
                    j += 1;
                }
                out.push(Tok::Num);
                i = j;
            }
            _ if c.is_ascii_alphabetic() => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                let w = &s[i..j];
                out.push(match w {
                    "last" => Tok::Last,
                    "to" => Tok::To,
                    _ => Tok::Word(w.to_string()),
                });
                i = j;
            }
            _ => {
                let ops = [
                    "==", "!=", "<>", "<=", ">=", "&&", "||", "<", ">", "!", "+", "-", "/", "%",
                ];
                match ops.iter().find(|o| s[i..].starts_with(**o)) {
                    Some(o) => {
                        out.push(Tok::Op(o));
                        i += o.len();
                    }
                    None => {
                        return Err(format!(
                            "unexpected '{}'",
                            &s[i..].chars().next().unwrap_or('?')
                        ))
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What a parsed expression is, as far as the checks care.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Predicate,
    Value { has_path: bool },
}

struct Parser<'a> {
    t: &'a [Tok],
    i: usize,
    /// The paths it evaluates, each counted once per item it starts from (see `steps`).
    weight: u64,
    /// How many times the path being read runs: 1 at the top; inside `?(...)`, the items the
    /// enclosing path brought there, repeats included.
    times: u64,
    nesting: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.t.get(self.i).cloned();
        self.i += 1;
        t
    }
    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &Tok, what: &str) -> Result<(), String> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(format!("expected {what}"))
        }
    }
    fn word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(x)) if x == w) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Kind, String> {
        let mut k = self.and()?;
        while self.eat(&Tok::Op("||")) {
            let r = self.and()?;
            k = self.logical(k, r, "||")?;
        }
        Ok(k)
    }
    fn and(&mut self) -> Result<Kind, String> {
        let mut k = self.not()?;
        while self.eat(&Tok::Op("&&")) {
            let r = self.not()?;
            k = self.logical(k, r, "&&")?;
        }
        Ok(k)
    }
    fn logical(&self, l: Kind, r: Kind, op: &str) -> Result<Kind, String> {
        if l != Kind::Predicate || r != Kind::Predicate {
            return Err(format!("{op} joins conditions, not values"));
        }
        Ok(Kind::Predicate)
    }
    fn not(&mut self) -> Result<Kind, String> {
        if self.eat(&Tok::Op("!")) {
            let k = self.not()?;
            if k != Kind::Predicate {
                return Err("! applies to a condition".into());
            }
            return Ok(Kind::Predicate);
        }
        self.comparison()
    }
    fn comparison(&mut self) -> Result<Kind, String> {
        let l = self.additive()?;
        let cmp = ["==", "!=", "<>", "<", "<=", ">", ">="];
        if let Some(Tok::Op(o)) = self.peek().cloned() {
            if cmp.contains(&o) {
                self.i += 1;
                let r = self.additive()?;
                return match (l, r) {
                    (Kind::Value { has_path: true }, Kind::Value { has_path: true }) => Err(format!(
                        "{o} compares two paths: every item of one is compared with every item of the other, which costs the product of their sizes; compare a path with a constant"
                    )),
                    (Kind::Value { .. }, Kind::Value { .. }) => Ok(Kind::Predicate),
                    _ => Err(format!("{o} compares values, not conditions")),
                };
            }
        }
        if self.word("starts") {
            if !self.word("with") {
                return Err("expected starts with".into());
            }
            let r = self.additive()?;
            return match (l, r) {
                (Kind::Value { .. }, Kind::Value { has_path: false }) => Ok(Kind::Predicate),
                _ => Err("starts with takes a path and a constant string".into()),
            };
        }
        if self.word("like_regex") {
            let Some(Tok::Str(pattern)) = self.next() else {
                return Err("like_regex takes a pattern string".into());
            };
            if pattern.len() > MAX_PATTERN {
                return Err(format!(
                    "its like_regex pattern is {} bytes, over the limit of {MAX_PATTERN}",
                    pattern.len()
                ));
            }
            let b = pattern.as_bytes();
            if b.windows(2).any(|w| w[0] == b'\\' && w[1].is_ascii_digit()) {
                return Err("its like_regex pattern uses a back reference (\\1 ... \\9), whose cost can grow exponentially".into());
            }
            if self.word("flag") {
                let Some(Tok::Str(_)) = self.next() else {
                    return Err("flag takes a string".into());
                };
            }
            return match l {
                Kind::Value { .. } => Ok(Kind::Predicate),
                _ => Err("like_regex takes a path".into()),
            };
        }
        Ok(l)
    }
    fn additive(&mut self) -> Result<Kind, String> {
        let mut k = self.multiplicative()?;
        while matches!(self.peek(), Some(Tok::Op("+" | "-"))) {
            self.i += 1;
            let r = self.multiplicative()?;
            k = arith(k, r)?;
        }
        Ok(k)
    }
    fn multiplicative(&mut self) -> Result<Kind, String> {
        let mut k = self.unary()?;
        while matches!(self.peek(), Some(Tok::Op("/" | "%")) | Some(Tok::Star)) {
            self.i += 1;
            let r = self.unary()?;
            k = arith(k, r)?;
        }
        Ok(k)
    }
    fn unary(&mut self) -> Result<Kind, String> {
        if matches!(self.peek(), Some(Tok::Op("+" | "-"))) {
            self.i += 1;
            let k = self.unary()?;
            return match k {
                Kind::Value { .. } => Ok(k),
                _ => Err("a sign applies to a value".into()),
            };
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<Kind, String> {
        match self.peek().cloned() {
            Some(Tok::LParen) => {
                self.i += 1;
                let k = self.or()?;
                self.expect(&Tok::RParen, ")")?;
                if self.word("is") {
                    if !self.word("unknown") {
                        return Err("expected is unknown".into());
                    }
                    if k != Kind::Predicate {
                        return Err("is unknown applies to a condition".into());
                    }
                    return Ok(Kind::Predicate);
                }
                // (a parenthesised value may go on with accessors, which repeat its items)
                if k != Kind::Predicate {
                    let repeats = self.steps()?;
                    if repeats > 1 {
                        self.count(repeats)?;
                    }
                }
                Ok(k)
            }
            Some(Tok::Word(w)) if w == "exists" => {
                self.i += 1;
                self.expect(&Tok::LParen, "( after exists")?;
                let k = self.or()?;
                self.expect(&Tok::RParen, ")")?;
                match k {
                    Kind::Value { .. } => Ok(Kind::Predicate),
                    _ => Err("exists takes a path".into()),
                }
            }
            Some(Tok::Word(w)) if w == "true" || w == "false" || w == "null" => {
                self.i += 1;
                Ok(Kind::Value { has_path: false })
            }
            Some(Tok::Str(_)) | Some(Tok::Num) => {
                self.i += 1;
                // (a literal may have methods: "2020-01-01".size())
                self.steps()?;
                Ok(Kind::Value { has_path: false })
            }
            Some(Tok::Dollar) => {
                if self.nesting > 0 {
                    return Err("$ inside a filter expression starts from the whole event again for every item it looks at; use @ for the item".into());
                }
                self.i += 1;
                self.path()
            }
            Some(Tok::At) => {
                if self.nesting == 0 {
                    return Err("@ only has a meaning inside a filter expression ?(...)".into());
                }
                self.i += 1;
                self.path()
            }
            Some(Tok::Var(v)) => Err(format!("a filter has no variables (${v:?})")),
            Some(Tok::Last) => Err("last only has a meaning inside [ ]".into()),
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("unexpected end".into()),
        }
    }
    fn path(&mut self) -> Result<Kind, String> {
        let repeats = self.steps()?;
        self.count(repeats)?;
        Ok(Kind::Value { has_path: true })
    }
    /// Adds one path that runs `self.times` times and repeats its items `repeats` times.
    fn count(&mut self, repeats: u64) -> Result<(), String> {
        self.weight = self
            .weight
            .saturating_add(self.times.max(1).saturating_mul(repeats));
        if self.weight > MAX_PATHS as u64 {
            return Err(format!(
                "it evaluates more than {MAX_PATHS} paths (a subscript list [a, b, ...] counts what follows once per subscript, .keyvalue() three times)"
            ));
        }
        Ok(())
    }
    /// Reads a path's accessors; returns how many times over they may yield each node of the
    /// event. Lax mode wraps a non-array as an array of one, so each subscript of a list
    /// yields the item again: `[0,0]` doubles what it is given, and k of them in a row make
    /// 2^k items from one (22 took 1.3 s on a 10-byte event in 0.4.0's first review).
    /// `.keyvalue()` makes an object of three members per member. Wildcards, ranges and
    /// filters yield each node at most once.
    fn steps(&mut self) -> Result<u64, String> {
        let mut repeats: u64 = 1;
        loop {
            match self.peek().cloned() {
                Some(Tok::Key(_)) | Some(Tok::AnyKey) => self.i += 1,
                Some(Tok::AnyLevel) => {
                    return Err(".** (any level) is not allowed: its cost grows with the event's size at every level it is nested; name the fields instead".into())
                }
                Some(Tok::LBracket) => {
                    self.i += 1;
                    if self.eat(&Tok::Star) {
                        self.expect(&Tok::RBracket, "]")?;
                        continue;
                    }
                    let mut subscripts: u64 = 0;
                    loop {
                        self.subscript()?;
                        if self.eat(&Tok::To) {
                            self.subscript()?;
                        }
                        subscripts += 1;
                        if !self.eat(&Tok::Comma) {
                            break;
                        }
                    }
                    self.expect(&Tok::RBracket, "]")?;
                    repeats = repeats.saturating_mul(subscripts);
                    if repeats > MAX_PATHS as u64 {
                        return Err(format!(
                            "it evaluates more than {MAX_PATHS} paths (a subscript list [a, b, ...] counts what follows once per subscript, .keyvalue() three times)"
                        ));
                    }
                }
                Some(Tok::Question) => {
                    self.i += 1;
                    self.expect(&Tok::LParen, "( after ?")?;
                    self.nesting += 1;
                    if self.nesting > MAX_NESTING {
                        return Err(format!("it nests filter expressions more than {MAX_NESTING} deep"));
                    }
                    let outer = self.times;
                    self.times = outer.max(1).saturating_mul(repeats);
                    let k = self.or()?;
                    self.times = outer;
                    self.nesting -= 1;
                    self.expect(&Tok::RParen, ")")?;
                    if k != Kind::Predicate {
                        return Err("a filter expression ?(...) must be a condition".into());
                    }
                }
                Some(Tok::Method(m)) => {
                    self.i += 1;
                    if !METHODS.contains(&m.as_str()) {
                        return Err(format!(
                            ".{m}() is not allowed in a filter (allowed: {})",
                            METHODS.iter().map(|m| format!(".{m}()")).collect::<Vec<_>>().join(", ")
                        ));
                    }
                    self.expect(&Tok::LParen, "(")?;
                    // (.decimal(precision, scale) takes numbers)
                    while self.eat(&Tok::Num) || self.eat(&Tok::Comma) {}
                    self.expect(&Tok::RParen, ")")?;
                    if m == "keyvalue" {
                        repeats = repeats.saturating_mul(3);
                        if repeats > MAX_PATHS as u64 {
                            return Err(format!(
                                "it evaluates more than {MAX_PATHS} paths (a subscript list [a, b, ...] counts what follows once per subscript, .keyvalue() three times)"
                            ));
                        }
                    }
                }
                _ => return Ok(repeats),
            }
        }
    }
    fn subscript(&mut self) -> Result<(), String> {
        // an integer, last, or last - integer
        let negative = self.eat(&Tok::Op("-"));
        if self.eat(&Tok::Num) {
            return Ok(());
        }
        if !negative && self.eat(&Tok::Last) {
            if matches!(self.peek(), Some(Tok::Op("-" | "+"))) {
                self.i += 1;
                if !self.eat(&Tok::Num) {
                    return Err("expected a number after last -".into());
                }
            }
            return Ok(());
        }
        Err("array subscripts are numbers or last".into())
    }
}

fn arith(l: Kind, r: Kind) -> Result<Kind, String> {
    match (l, r) {
        (Kind::Value { has_path: a }, Kind::Value { has_path: b }) => {
            Ok(Kind::Value { has_path: a || b })
        }
        _ => Err("arithmetic applies to values".into()),
    }
}

/// Checks a filter as PostgreSQL prints it; returns its weight (the paths it evaluates).
pub fn check(printed: &str) -> Result<usize, String> {
    let mut text = printed.trim();
    if let Some(rest) = text.strip_prefix("strict ") {
        text = rest;
    } else if let Some(rest) = text.strip_prefix("lax ") {
        text = rest;
    }
    let toks = lex(text)?;
    let mut p = Parser {
        t: &toks,
        i: 0,
        weight: 0,
        times: 1,
        nesting: 0,
    };
    let k = p.or()?;
    if p.i < toks.len() {
        return Err(format!("unexpected {:?}", toks[p.i]));
    }
    if k != Kind::Predicate {
        return Err("a filter must be a condition, like $.data.user.email_verified == true".into());
    }
    Ok((p.weight as usize).max(1))
}

/// Whether a filter of `weight` may be evaluated on an event of `bytes`.
pub fn affordable(weight: i64, bytes: i64) -> bool {
    weight.max(1).saturating_mul(bytes.max(1)) <= BUDGET
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_users_write_is_accepted_with_its_weight() {
        for (printed, weight) in [
            ("($.\"data\".\"user\".\"email_verified\" == true)", 1),
            ("($.\"tenant_id\" == \"acme\")", 1),
            ("exists ($.\"data\".\"user\".\"phone\")", 1),
            ("($.\"type\" starts with \"user.\")", 1),
            (
                "($.\"data\".\"items\"[*].\"price\" > 10 && $.\"data\".\"x\" != null)",
                2,
            ),
            (
                "(!($.\"data\".\"x\" == 1) || $.\"data\".\"y\" like_regex \"^a.*\" flag \"i\")",
                2,
            ),
            ("($.\"data\".\"n\" + 1 > 2)", 1),
            ("($.\"data\".\"x\" == 1) is unknown", 1),
            ("($.\"data\".\"a\"[0 to 3,last] == 1)", 2),
            ("($.\"data\".\"x\".size() > 2)", 1),
            ("($.\"data\".\"x\".type() == \"string\")", 1),
            ("($.\"weird key\".\"x\\\"y\" == \"a\\nbé\")", 1),
            ("($.\"data\".* == 1)", 1),
            ("(-$.\"data\".\"x\" < 0)", 1),
            ("($.\"data\".\"x\".keyvalue().\"key\" == \"a\")", 3),
            ("strict ($.\"data\".\"x\" == 1)", 1),
            ("($.\"data\".\"x\" == 10000000000)", 1),
            ("($.\"data\".\"x\" == -1.5)", 1),
            ("($.\"data\".\"x\".floor() == 1)", 1),
            ("exists ($.\"data\".\"a\"[*]?(@ > 1 && @ < 5))", 3),
            (
                "exists ($.\"data\".\"a\"[*]?(exists (@.\"b\"?(@ == 1))))",
                3,
            ),
            ("($.\"data\".\"a\"[last - 1] == 2)", 1),
            ("($.\"x\" == 1.5e-7)", 1),
        ] {
            assert_eq!(check(printed), Ok(weight), "{printed}");
        }
    }

    #[test]
    fn what_explodes_is_refused_naming_why() {
        for (printed, why) in [
            ("$.\"data\".**?(@ == \"x\")", "any level"),
            ("($.\"data\".**{2 to 5} == 1)", "any level"),
            (
                "($.\"data\".\"a\" == $.\"data\".\"b\")",
                "compares two paths",
            ),
            (
                "exists ($.\"a\"[*]?($.\"b\"[*] == 1))",
                "starts from the whole event",
            ),
            ("($.\"data\".\"x\" == $\"y\")", "no variables"),
            (
                "($.\"data\".\"x\".datetime() < \"2020-01-01\".datetime())",
                ".datetime() is not allowed",
            ),
            ("($.\"x\" like_regex \"(a*)\\\\1\")", "back reference"),
            ("$.\"data\".\"a\"[*]?(@.\"b\" > 1)", "must be a condition"),
            ("($.\"a\" == 1 && @ == 2)", "only has a meaning inside"),
        ] {
            let e = check(printed).unwrap_err();
            assert!(e.contains(why), "{printed}: {e}");
        }
        let deep = format!(
            "exists ($.\"a\"{})",
            "?(exists (@.\"a\"".repeat(5) + &"))".repeat(5)
        );
        assert!(check(&deep).unwrap_err().contains("deep"), "{deep}");
        let wide = (0..17)
            .map(|i| format!("$.\"k{i}\" == 1"))
            .collect::<Vec<_>>()
            .join(" || ");
        assert!(check(&format!("({wide})"))
            .unwrap_err()
            .contains("more than 16 paths"));
    }

    #[test]
    fn what_repeats_items_counts_once_per_repeat() {
        // In lax mode `[0,0]` yields a non-array twice: k of them make 2^k items.
        let chain = |k: usize| format!("($[0,0]{} == 1)", "[0,0]".repeat(k - 1));
        assert_eq!(check(&chain(4)), Ok(16));
        for k in [5, 22, 200] {
            let e = check(&chain(k)).unwrap_err();
            assert!(e.contains("subscript list"), "{k}: {e}");
        }
        let nested = format!("exists ($[0,0]{}?(@ == 2))", "[0,0]".repeat(21));
        assert!(check(&nested).is_err(), "{nested}");
        // A filter's paths run once per item the path around them brought: 4 + 4 x 2.
        assert_eq!(
            check("exists ($.\"a\"[0,1][0,1]?(@.\"b\" == 1 || @.\"c\" == 2))"),
            Ok(12)
        );
        assert!(check("exists ($.\"a\"[0,1][0,1]?(@.\"b\" == 1 || @.\"c\" == 2 || @.\"d\" == 3 || @.\"e\" == 4))").is_err());
        assert_eq!(
            check("($.\"x\".keyvalue().keyvalue().\"key\" == \"a\")"),
            Ok(9)
        );
        assert!(
            check("($.\"x\".keyvalue().keyvalue().keyvalue().\"key\" == \"a\")")
                .unwrap_err()
                .contains(".keyvalue()")
        );
        assert!(check("(($.\"x\")[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0] == 1)").is_err());
        // Ranges and wildcards yield each element once.
        assert_eq!(check("($[0 to 1000000][*].*[0 to last] == 1)"), Ok(1));
    }

    #[test]
    fn the_budget_follows_weight_and_size() {
        assert!(affordable(16, 256 * 1024));
        assert!(!affordable(16, 256 * 1024 + 1));
        assert!(affordable(1, 4 * 1024 * 1024));
        assert!(!affordable(2, 4 * 1024 * 1024));
    }
}

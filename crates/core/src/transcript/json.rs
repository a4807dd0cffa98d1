//! The little JSON the transcript format needs: a value tree, a writer and a reader. Numbers
//! are unsigned integers only (every number in a transcript is a count, an id, a code or a
//! nanosecond offset), which keeps the reader exact and small; the core has no JSON
//! dependency.

use std::borrow::Cow;
use std::fmt::Write as _;

/// A JSON value of the transcript subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Num(u64),
    Str(String),
    Arr(Vec<Value>),
    /// Members in order; keys written by the transcript are static, read ones owned.
    Obj(Vec<(Cow<'static, str>, Value)>),
}

impl Value {
    pub(crate) fn obj() -> Self {
        Value::Obj(Vec::new())
    }

    /// Adds a member (objects only).
    pub(crate) fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        if let Value::Obj(members) = &mut self {
            members.push((Cow::Borrowed(key), value.into()));
        }
        self
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_arr(&self) -> Option<&[Value]> {
        match self {
            Value::Arr(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Str(s) => write_str(s, out),
            Value::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Value::Obj(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(key, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    pub(crate) fn to_line(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Num(n)
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Num(n.into())
    }
}
impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value::Num(n.into())
    }
}
impl From<u8> for Value {
    fn from(n: u8) -> Self {
        Value::Num(n.into())
    }
}
impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Value::Num(n as u64)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Self {
        o.map_or(Value::Null, Into::into)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::Arr(v.into_iter().map(Into::into).collect())
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses one JSON value (the whole of `text`, surrounding whitespace allowed).
pub(crate) fn parse(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing characters at byte {}", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

/// Deepest nesting accepted (a transcript nests four levels; this bounds the recursion on
/// hostile input).
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err(&self, what: &str) -> String {
        format!("{what} at byte {}", self.i)
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.ws();
        let Some(&c) = self.s.get(self.i) else {
            return Err(self.err("unexpected end"));
        };
        match c {
            b'n' if self.eat("null") => Ok(Value::Null),
            b't' if self.eat("true") => Ok(Value::Bool(true)),
            b'f' if self.eat("false") => Ok(Value::Bool(false)),
            b'"' => self.string().map(Value::Str),
            b'0'..=b'9' => {
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                    self.i += 1;
                }
                // JSON writes no leading zero (RFC 8259 §6), and neither does the recorder.
                if self.s[start] == b'0' && self.i - start > 1 {
                    return Err(format!("number with a leading zero at byte {start}"));
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .map(Value::Num)
                    .ok_or_else(|| self.err("number out of range"))
            }
            b'[' | b'{' => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(self.err("nested too deeply"));
                }
                self.i += 1;
                let v = if c == b'[' {
                    self.array()
                } else {
                    self.object()
                };
                self.depth -= 1;
                v
            }
            _ => Err(self.err("unexpected character")),
        }
    }

    fn array(&mut self) -> Result<Value, String> {
        let mut items = Vec::new();
        self.ws();
        if self.eat("]") {
            return Ok(Value::Arr(items));
        }
        loop {
            items.push(self.value()?);
            self.ws();
            if self.eat("]") {
                return Ok(Value::Arr(items));
            }
            if !self.eat(",") {
                return Err(self.err("expected ',' or ']'"));
            }
        }
    }

    fn object(&mut self) -> Result<Value, String> {
        let mut members = Vec::new();
        self.ws();
        if self.eat("}") {
            return Ok(Value::Obj(members));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return Err(self.err("expected a key"));
            }
            let key = self.string()?;
            self.ws();
            if !self.eat(":") {
                return Err(self.err("expected ':'"));
            }
            members.push((Cow::Owned(key), self.value()?));
            self.ws();
            if self.eat("}") {
                return Ok(Value::Obj(members));
            }
            if !self.eat(",") {
                return Err(self.err("expected ',' or '}'"));
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .s
            .get(self.i..self.i + 4)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(digits)
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return Err(self.err("unterminated string"));
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let hi = self.hex4()?;
                            // A high surrogate is only half a character: its low half
                            // must follow, or the escape is malformed.
                            let code = if (0xD800..0xDC00).contains(&hi) && self.eat("\\u") {
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("bad \\u escape (unpaired surrogate)"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or_else(|| self.err("bad \\u escape"))?
                        }
                        _ => return Err(self.err("bad escape")),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let v = Value::obj()
            .with("a", 1u64)
            .with("s", "q\"\\\n\u{1}é😀")
            .with("l", vec![Value::Null, Value::Bool(true), Value::obj()])
            .with("n", Option::<u64>::None)
            .with("max", u64::MAX);
        let line = v.to_line();
        assert!(!line.contains('\n'));
        assert_eq!(parse(&line).unwrap(), v);
        assert_eq!(
            parse(r#" {"k" : "\u00e9\ud83d\ude00\/"} "#).unwrap(),
            Value::obj().with("k", "é😀/")
        );
        assert!(parse("{\"a\":1} x").is_err());
        assert!(parse("-1").is_err());
        assert!(parse(&"[".repeat(100)).is_err());
        assert!(parse("\"abc").is_err());
        // Malformed in ways a lenient reader would take for something else.
        assert!(parse(r#""\u+abc""#).is_err());
        assert!(parse(r#""\ud800\u0041""#).is_err());
        assert!(parse("012").is_err());
        assert_eq!(parse("0").unwrap(), Value::Num(0));
    }

    /// What other writers produce reads back: every escape, a number that ends the text,
    /// nesting up to the limit (siblings do not add up), and errors that say where.
    #[test]
    fn reads_what_others_write_and_says_where_it_cannot() {
        assert_eq!(
            parse(r#""\r\t\b\f\n""#).unwrap(),
            Value::Str("\r\t\u{8}\u{c}\n".into())
        );
        assert_eq!(parse("12").unwrap(), Value::Num(12));
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&deep(MAX_DEPTH)).is_ok());
        assert!(parse(&deep(MAX_DEPTH + 1)).is_err());
        let siblings = format!("[{}]", vec![deep(MAX_DEPTH - 1); 3].join(","));
        assert!(parse(&siblings).is_ok(), "siblings count as one level");
        assert_eq!(
            parse("[1, x]").unwrap_err(),
            "unexpected character at byte 4"
        );
    }

    /// Control characters are escaped, as JSON requires (other readers, `jq` or Python,
    /// refuse them raw); the space after them is not.
    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        write_str("\u{0}\u{1}\u{1f} \u{7f}", &mut out);
        assert_eq!(out, "\"\\u0000\\u0001\\u001f \u{7f}\"");
    }
}

//! Text Keyfob accepts from a client, wherever it arrives: a path segment, a query parameter, a
//! form field or a JSON document (its keys too).
//!
//! Storage decides the rule: PostgreSQL's `text` and `jsonb` cannot hold a NUL character, so one
//! that reached a query would fail there as a server error. Percent-decoded bytes that are not
//! UTF-8 would be replaced silently by the decoders the handlers use, so they are refused too
//! rather than stored as something the client did not send. Both are refused at the edge, naming
//! the field, before any handler sees the input.

use std::fmt;

use percent_encoding::percent_decode;
use serde_json::Value;

/// Longest field name an error repeats back.
const MAX_NAME_CHARS: usize = 80;

/// What is wrong with a piece of client text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextProblem {
    #[error("contains a NUL character (U+0000), which Keyfob does not accept")]
    Nul,
    #[error("is not valid UTF-8 once percent-decoded")]
    NotUtf8,
}

/// A piece of client input that cannot be accepted, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The query parameter or form field, or the JSON path (`customer.name`, `items[0]`); empty
    /// for a JSON document that is itself a bad string.
    pub field: String,
    pub problem: TextProblem,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "the document {}", self.problem)
        } else {
            write!(f, "`{}` {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for InputError {}

/// Checks text that has already been decoded.
pub fn check_text(text: &str) -> Result<(), TextProblem> {
    if text.contains('\0') {
        Err(TextProblem::Nul)
    } else {
        Ok(())
    }
}

/// Checks one percent-encoded component (a path segment, or a name or value of a query).
fn check_encoded(raw: &[u8]) -> Result<(), TextProblem> {
    // Most components hold no escape: checked where they lie, without decoding.
    if !raw.contains(&b'%') {
        let text = std::str::from_utf8(raw).map_err(|_| TextProblem::NotUtf8)?;
        return check_text(text);
    }
    let decoded: Vec<u8> = percent_decode(raw).collect();
    let text = std::str::from_utf8(&decoded).map_err(|_| TextProblem::NotUtf8)?;
    check_text(text)
}

/// Checks one percent-encoded path segment.
pub fn check_path_segment(raw: &str) -> Result<(), TextProblem> {
    check_encoded(raw.as_bytes())
}

/// Checks every name and value of `application/x-www-form-urlencoded` text: a query string or a
/// form body. The error names the field (the name as far as it can be shown).
pub fn check_urlencoded(raw: &[u8]) -> Result<(), InputError> {
    for pair in raw.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        if let Err(problem) = check_encoded(name).and_then(|()| check_encoded(value)) {
            let decoded: Vec<u8> = percent_decode(name).collect();
            return Err(InputError {
                field: shown_name(&String::from_utf8_lossy(&decoded).replace('+', " ")),
                problem,
            });
        }
    }
    Ok(())
}

/// Whether JSON text may hold a NUL character once parsed. JSON cannot carry a raw NUL byte (a
/// control character must be escaped), so a NUL can only come from the escape `\u0000`; text
/// without it needs no walk.
pub fn json_may_hold_nul(raw: &[u8]) -> bool {
    let mut rest = raw;
    while let Some(at) = rest.iter().position(|b| *b == b'\\') {
        if rest[at..].starts_with(b"\\u0000") {
            return true;
        }
        rest = &rest[at + 1..];
    }
    false
}

/// Checks every string and every key of a JSON document. The error names the JSON path.
pub fn check_json(value: &Value) -> Result<(), InputError> {
    let mut path = Vec::new();
    walk(value, &mut path)
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn walk<'a>(value: &'a Value, path: &mut Vec<Segment<'a>>) -> Result<(), InputError> {
    match value {
        Value::String(s) => check_text(s).map_err(|problem| InputError {
            field: json_path(path),
            problem,
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Segment::Index(i));
                walk(item, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                path.push(Segment::Key(key));
                check_text(key).map_err(|problem| InputError {
                    field: json_path(path),
                    problem,
                })?;
                walk(item, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// `customer.name`, `items[0].sku`, and `customer["odd key"]` for a key that is not a plain name
/// (quoted as JSON, so a NUL shows as `\u0000`).
fn json_path(path: &[Segment<'_>]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Key(key) if is_plain_name(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Key(key) => {
                let quoted = serde_json::to_string(key).unwrap_or_default();
                out.push_str(&format!("[{}]", shown_name(&quoted)));
            }
        }
    }
    out
}

fn is_plain_name(key: &str) -> bool {
    key.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A name as an error message may repeat it: control characters escaped, at most 80 characters.
fn shown_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().take(MAX_NAME_CHARS) {
        if c.is_control() {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(err: InputError) -> String {
        err.field
    }

    #[test]
    fn text_without_nul_passes() {
        assert_eq!(check_text("plain, with\ttabs\nand lines"), Ok(()));
        assert_eq!(check_text("a\0b"), Err(TextProblem::Nul));
    }

    #[test]
    fn urlencoded_names_the_field() {
        assert_eq!(check_urlencoded(b"a=1&b=two+words&c=%C3%A9"), Ok(()));
        assert_eq!(check_urlencoded(b""), Ok(()));
        assert_eq!(check_urlencoded(b"&&flag&x="), Ok(()));
        let err = check_urlencoded(b"a=1&email=x%00y").unwrap_err();
        assert_eq!(err.problem, TextProblem::Nul);
        assert_eq!(err.field, "email");
        assert_eq!(
            err.to_string(),
            "`email` contains a NUL character (U+0000), which Keyfob does not accept"
        );
        let err = check_urlencoded(b"where%5Bname%5D%5Bequals%5D=%FF").unwrap_err();
        assert_eq!(err.problem, TextProblem::NotUtf8);
        assert_eq!(err.field, "where[name][equals]");
        // In the name itself: shown escaped.
        let err = check_urlencoded(b"na%00me=1").unwrap_err();
        assert_eq!(err.field, "na\\u0000me");
        // An overlong or truncated UTF-8 sequence is not UTF-8.
        assert!(check_urlencoded(b"x=%C0%80").is_err());
        assert!(check_urlencoded(b"x=%E2%82").is_err());
        // A lone surrogate encoded as UTF-8 (CESU) is not UTF-8 either.
        assert!(check_urlencoded(b"x=%ED%A0%80").is_err());
        // A stray percent sign is left as it is, as the decoders do.
        assert_eq!(check_urlencoded(b"x=100%&y=%zz"), Ok(()));
        // Raw bytes (a body need not be percent-encoded) are checked as they are.
        assert_eq!(check_urlencoded("x=café".as_bytes()), Ok(()));
        assert_eq!(
            check_urlencoded(b"x=a\0b").unwrap_err().problem,
            TextProblem::Nul
        );
        assert_eq!(
            check_urlencoded(b"x=\xff").unwrap_err().problem,
            TextProblem::NotUtf8
        );
    }

    #[test]
    fn path_segments() {
        assert_eq!(check_path_segment("deals"), Ok(()));
        assert_eq!(check_path_segment("caf%C3%A9"), Ok(()));
        assert_eq!(check_path_segment("a%00"), Err(TextProblem::Nul));
        assert_eq!(check_path_segment("%ff"), Err(TextProblem::NotUtf8));
    }

    #[test]
    fn json_names_the_path_of_values_and_keys() {
        assert_eq!(check_json(&json!({"a": [1, "x", {"b": null}]})), Ok(()));
        let doc = json!({"customer": {"name": "a\u{0}b"}});
        assert_eq!(field(check_json(&doc).unwrap_err()), "customer.name");
        let doc = json!({"items": [{"sku": "ok"}, {"sku": "\u{0}"}]});
        assert_eq!(field(check_json(&doc).unwrap_err()), "items[1].sku");
        let doc = json!({"customer": {"na\u{0}me": "x"}});
        assert_eq!(
            field(check_json(&doc).unwrap_err()),
            "customer[\"na\\u0000me\"]"
        );
        let doc = json!(["\u{0}"]);
        assert_eq!(field(check_json(&doc).unwrap_err()), "[0]");
        let err = check_json(&json!("\u{0}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("the document {}", TextProblem::Nul)
        );
    }

    #[test]
    fn only_the_escape_can_put_a_nul_in_json() {
        assert!(json_may_hold_nul(br#"{"a":"\u0000"}"#));
        assert!(!json_may_hold_nul(br#"{"a":"\u0001"}"#));
        assert!(json_may_hold_nul(br#"\\\u0000"#));
        assert!(!json_may_hold_nul(br#"ends with \u000"#));
        assert!(!json_may_hold_nul(b""));
        let parsed: Value = serde_json::from_slice(br#"{"a\u0000":1}"#).unwrap();
        assert!(check_json(&parsed).is_err());
        // A raw NUL byte is not JSON at all.
        assert!(serde_json::from_slice::<Value>(b"{\"a\":\"\0\"}").is_err());
    }
}

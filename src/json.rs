//! JSON for untrusted JOSE input, parsed the one way this filter reads it: a member name may appear
//! only once in an object, at every nesting level. serde_json's `Value` keeps the last of two
//! duplicate members, while other parsers (and so other verifiers, or the product behind) keep the
//! first: a token with `"exp": <past>, "exp": <future>` would then mean two things. RFC 7515 §5.2
//! and RFC 8725 §3.2 let a JWS consumer reject such input, so this parser does. Names are compared
//! after JSON unescaping, so `"exp"` and `"\u0065xp"` are the same member.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictError {
    /// Not one JSON document (syntax, trailing data, nesting deeper than serde_json's limit).
    Syntax,
    /// An object names the same member twice.
    DuplicateMember,
}

/// Parses one JSON document, refusing duplicate member names anywhere in it.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue.deserialize(&mut de).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) {
            StrictError::DuplicateMember
        } else {
            StrictError::Syntax
        }
    })?;
    de.end().map_err(|_| StrictError::Syntax)?;
    Ok(value)
}

/// `parse`, for input that must be a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictError> {
    match parse(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(StrictError::Syntax),
    }
}

const DUPLICATE: &str = "duplicate member";

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(name) = access.next_key::<String>()? {
            if map.contains_key(&name) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let value = access.next_value_seed(StrictValue)?;
            map.insert(name, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_every_level_and_after_unescaping() {
        for doc in [
            r#"{"exp":1,"exp":2}"#,
            r#"{"exp":1,"\u0065xp":2}"#,
            r#"{"a":{"b":1,"b":1}}"#,
            r#"{"a":[{"x":1},{"y":1,"y":2}]}"#,
            r#"[{"k":1,"k":1}]"#,
        ] {
            assert_eq!(
                parse(doc.as_bytes()),
                Err(StrictError::DuplicateMember),
                "{doc}"
            );
        }
    }

    #[test]
    fn ordinary_documents_parse_as_serde_json_does() {
        for doc in [
            r#"{"a":1,"b":[1,2,{"c":null}],"d":{"e":"f"},"g":1.5,"h":-3,"i":true}"#,
            r#"{"same":{"x":1},"other":{"x":1}}"#,
            "[]",
            "\"s\"",
            "18446744073709551615",
        ] {
            let want: Value = serde_json::from_str(doc).unwrap();
            assert_eq!(parse(doc.as_bytes()), Ok(want), "{doc}");
        }
    }

    #[test]
    fn syntax_errors_and_trailing_data() {
        for doc in ["", "{", r#"{"a":1} x"#, r#"{"a":1}{}"#, "nul"] {
            assert_eq!(parse(doc.as_bytes()), Err(StrictError::Syntax), "{doc:?}");
        }
        assert_eq!(parse_object(b"[1]"), Err(StrictError::Syntax));
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(parse(deep.as_bytes()), Err(StrictError::Syntax));
    }
}

//! The JSON documents of resources: what a body may hold, and how `PATCH /api/{resource}/{id}`
//! changes one.

use serde_json::{Map, Value};

use crate::vault::envelope;

/// Fields Keyfob sets on every record; a body may not write them.
pub const SYSTEM_FIELDS: &[&str] = &["id", "createdAt", "updatedAt"];

/// How deep a document may nest (objects and arrays), so that no recursion over one is unbounded.
pub const MAX_DEPTH: usize = 32;

/// Why a body cannot be a record's document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("`{0}` is set by Keyfob and cannot be written")]
    SystemField(&'static str),
    #[error("the document nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// How many levels of objects and arrays `value` nests (a scalar is 0).
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Checks that a document nests at most [`MAX_DEPTH`] levels.
pub fn check_depth(value: &Value) -> Result<(), DocumentError> {
    if depth(value) > MAX_DEPTH {
        return Err(DocumentError::TooDeep);
    }
    Ok(())
}

/// A body for a new or replaced record, or a merge patch: an object that does not set
/// [`SYSTEM_FIELDS`] and nests at most [`MAX_DEPTH`] levels.
pub fn check_document(value: Value) -> Result<Map<String, Value>, DocumentError> {
    let Value::Object(map) = value else {
        return Err(DocumentError::NotAnObject);
    };
    if let Some(field) = SYSTEM_FIELDS.iter().find(|f| map.contains_key(**f)) {
        return Err(DocumentError::SystemField(field));
    }
    let nested = map.values().map(depth).max().unwrap_or(0);
    if 1 + nested > MAX_DEPTH {
        return Err(DocumentError::TooDeep);
    }
    Ok(map)
}

/// Applies an RFC 7396 JSON merge patch to `target`: an object patch sets each of its members,
/// recursively, and `null` removes one; anything else replaces the target whole. A sealed value
/// (a vault envelope) replaces whatever was there and is never merged into, so a patch cannot
/// splice fields into a ciphertext's envelope.
///
/// The recursion is as deep as the patch, which callers bound (documents nest at most 32 levels).
pub fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(changes) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let map = target.as_object_mut().expect("made an object above");
            for (key, value) in changes {
                if value.is_null() {
                    map.remove(&key);
                } else if envelope(&value).is_some() {
                    map.insert(key, value);
                } else {
                    merge_patch(map.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::make_envelope;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut doc = json!(1);
        for _ in 0..levels {
            doc = json!({ "x": doc });
        }
        doc
    }

    #[test]
    fn documents_must_be_objects_without_system_fields() {
        assert_eq!(check_document(json!([1])), Err(DocumentError::NotAnObject));
        assert_eq!(check_document(json!("x")), Err(DocumentError::NotAnObject));
        for field in SYSTEM_FIELDS {
            assert_eq!(
                check_document(json!({ *field: "x" })),
                Err(DocumentError::SystemField(field))
            );
        }
        let ok = check_document(json!({"name": "x", "tags": [1, 2]})).unwrap();
        assert_eq!(ok["name"], "x");
    }

    #[test]
    fn documents_nest_at_most_max_depth_levels() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": 2}]})), 3);
        assert!(check_document(nested(MAX_DEPTH)).is_ok());
        assert_eq!(
            check_document(nested(MAX_DEPTH + 1)),
            Err(DocumentError::TooDeep)
        );
        assert!(check_depth(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(
            check_depth(&nested(MAX_DEPTH + 1)),
            Err(DocumentError::TooDeep)
        );
        let deep_array = (0..MAX_DEPTH).fold(json!(1), |inner, _| json!([inner]));
        assert_eq!(
            check_document(json!({ "a": deep_array })),
            Err(DocumentError::TooDeep)
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut doc, json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(doc, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    /// The examples of RFC 7396, appendix A.
    #[test]
    fn the_rfcs_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            let mut doc = target.clone();
            merge_patch(&mut doc, patch.clone());
            assert_eq!(doc, expected, "{target} patched with {patch}");
        }
    }

    #[test]
    fn a_sealed_value_replaces_and_is_never_merged_into() {
        let sealed = make_envelope("new-ciphertext".to_owned());
        let mut doc = json!({"ssn": make_envelope("old-ciphertext".to_owned()), "name": "x"});
        merge_patch(&mut doc, json!({"ssn": sealed.clone()}));
        assert_eq!(doc, json!({"ssn": sealed, "name": "x"}));
    }
}

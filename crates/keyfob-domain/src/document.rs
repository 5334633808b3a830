//! The JSON documents of resources: how `PATCH /api/{resource}/{id}` changes one.

use serde_json::{Map, Value};

use crate::vault::envelope;

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

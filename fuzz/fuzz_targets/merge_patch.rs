//! The JSON merge patch of `PATCH /api/{resource}/{id}` (RFC 7396). The input is two JSON
//! documents on two lines: the stored document and the patch.
#![no_main]

use keyfob_domain::document::merge_patch;
use keyfob_domain::vault::envelope;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((target, patch)) = text.split_once('\n') else {
        return;
    };
    let (Ok(target), Ok(patch)) = (
        serde_json::from_str::<Value>(target),
        serde_json::from_str::<Value>(patch),
    ) else {
        return;
    };
    let mut once = target.clone();
    merge_patch(&mut once, patch.clone());
    // A merge patch is idempotent.
    let mut twice = once.clone();
    merge_patch(&mut twice, patch.clone());
    assert_eq!(once, twice);
    match &patch {
        Value::Object(changes) => {
            let result = once.as_object().expect("an object patch makes an object");
            for (key, value) in changes {
                match value {
                    Value::Null => assert!(!result.contains_key(key)),
                    Value::Object(_) if envelope(value).is_none() => {
                        assert!(result[key].is_object())
                    }
                    other => assert_eq!(&result[key], other),
                }
            }
            // Members the patch does not name are left as they were.
            if let Value::Object(before) = &target {
                for (key, value) in before {
                    if !changes.contains_key(key) {
                        assert_eq!(&result[key], value);
                    }
                }
            }
        }
        other => assert_eq!(&once, other),
    }
});

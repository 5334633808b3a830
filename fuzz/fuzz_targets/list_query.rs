//! The query string of `GET /api/{resource}` and `GET /api/audit`, read as the server reads it
//! (`serde_urlencoded` into pairs). What is accepted is in range, and every field name is safe to
//! put into a JSON path: storage relies on it.
#![no_main]

use keyfob_domain::audit::AuditQuery;
use keyfob_domain::query::{self, Field, ListQuery};
use libfuzzer_sys::fuzz_target;

fn safe_segment(segment: &str) -> bool {
    segment.len() <= 64
        && segment
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check_field(field: &Field) {
    if let Field::Doc(segments) = field {
        assert!(!segments.is_empty() && segments.len() <= 8);
        assert!(segments.iter().all(|s| safe_segment(s)), "{segments:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(text) else {
        return;
    };
    if let Ok(list) = ListQuery::from_pairs(&pairs) {
        assert!((1..=query::MAX_LIMIT).contains(&list.limit));
        assert!((1..=query::MAX_PAGE).contains(&list.page));
        let _ = list.offset();
        assert!(list.filters.len() <= 16);
        if let Some(sort) = &list.sort {
            check_field(&sort.field);
        }
        for (field, _) in &list.filters {
            check_field(field);
        }
    }
    if let Ok(audit) = AuditQuery::from_pairs(&pairs) {
        assert!((1..=keyfob_domain::audit::MAX_LIMIT).contains(&audit.limit));
        assert!((1..=keyfob_domain::audit::MAX_PAGE).contains(&audit.page));
        let _ = audit.offset();
        if let (Some(since), Some(until)) = (audit.since, audit.until) {
            assert!(since < until);
        }
    }
    for (key, _) in &pairs {
        let _ = query::valid_resource(key);
    }
});

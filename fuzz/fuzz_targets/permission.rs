//! Permission strings (`deals.read`, `*.write`) and the lists of them that minting and `scope`
//! take. A parsed permission prints back as itself and grants only what it names.
#![no_main]

use keyfob_domain::permission::RESERVED_RESOURCES;
use keyfob_domain::{Action, Permission, PermissionSet, oauth};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(permission) = text.parse::<Permission>() {
        assert_eq!(permission.to_string(), text);
        assert_eq!(
            permission.to_string().parse::<Permission>().as_ref(),
            Ok(&permission)
        );
        let other = match permission.action() {
            Action::Read => Action::Write,
            Action::Write => Action::Read,
        };
        assert!(!permission.grants(permission.resource(), other));
        for reserved in RESERVED_RESOURCES {
            if permission.is_wildcard() {
                assert!(!permission.grants(reserved, permission.action()));
            }
        }
        let json = serde_json::to_string(&permission).unwrap();
        assert_eq!(
            serde_json::from_str::<Permission>(&json).unwrap(),
            permission
        );
    }
    // A token's or a mint request's list, one per line, as the claims carry it.
    if let Ok(PermissionSet::Only(list)) = PermissionSet::parse(text.lines()) {
        assert!(
            list.windows(2).all(|w| w[0] < w[1]),
            "sorted, without duplicates"
        );
        for p in list.iter() {
            assert!(text.lines().any(|line| line == p.to_string()));
        }
    }
    // `scope`: comma- or space-separated, duplicates dropped.
    if let Ok(scope) = oauth::parse_scope(text) {
        for (i, p) in scope.iter().enumerate() {
            assert!(!scope[..i].contains(p));
            let description = oauth::describe(p);
            assert!(!description.is_empty());
        }
    }
});

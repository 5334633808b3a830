//! The `Authorization` header: every request's first parser. Whatever arrives, it is refused or
//! read as exactly one well-formed credential.
#![no_main]

use keyfob_domain::credential::MAX_CREDENTIAL_LEN;
use keyfob_domain::{ApiKey, Credential};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    match Credential::from_header(header) {
        Ok(Credential::ApiKey(key)) => {
            assert!(header.len() <= MAX_CREDENTIAL_LEN);
            assert!(header.contains(key.expose()));
            assert_eq!(ApiKey::parse(key.expose()).as_ref(), Ok(&key));
            assert_eq!(key.hash().len(), 64);
            // The Debug form never shows the secret part.
            assert!(!format!("{key:?}").contains(&key.expose()[12..]));
        }
        Ok(Credential::Jwt(token)) => {
            assert!(header.contains(token.as_str()));
            let segments: Vec<&str> = token.split('.').collect();
            assert_eq!(segments.len(), 3, "{token}");
            for segment in segments {
                assert!(!segment.is_empty());
                assert!(
                    segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                );
            }
        }
        Err(_) => {}
    }
});

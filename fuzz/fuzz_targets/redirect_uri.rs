//! Redirect URIs and origins: registering them, matching the one a request names, and PKCE.
//! The input is two strings on two lines: a registered URI and the one a request gives.
#![no_main]

use keyfob_domain::oauth;
use libfuzzer_sys::fuzz_target;

fn host_is_loopback(uri: &str) -> bool {
    let rest = uri.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (registered, given) = text.split_once('\n').unwrap_or((text, text));
    if oauth::check_redirect_uri(registered).is_ok() {
        assert!(registered.len() <= oauth::MAX_URI_LEN);
        assert!(!registered.contains('#'));
        assert!(!registered.chars().any(char::is_control));
        assert!(registered.starts_with("https://") || registered.starts_with("http://"));
        if registered.starts_with("http://") {
            assert!(host_is_loopback(registered), "{registered}");
        }
    }
    if oauth::check_origin(registered).is_ok() {
        let rest = registered.split_once("://").unwrap().1;
        assert!(!rest.contains(['/', '?', '#']), "{registered}");
    }
    // Byte for byte, nothing else.
    let list = [registered.to_owned()];
    assert_eq!(oauth::redirect_matches(&list, given), registered == given);
    assert!(oauth::redirect_matches(&list, registered));
    // PKCE: a valid verifier answers its own S256 challenge, and only that.
    if oauth::valid_verifier(registered) {
        let challenge = oauth::s256(registered);
        assert!(oauth::valid_challenge(&challenge));
        assert!(oauth::pkce_matches(registered, &challenge));
        assert_eq!(oauth::pkce_matches(registered, given), given == challenge);
    } else {
        assert!(!oauth::pkce_matches(registered, given));
    }
});

//! Untrusted JWT text, through the steps `TokenService::verify` (crates/keyfob/src/tokens/
//! service.rs) takes before and after the signature check: `decode_header`, the `kid` and `alg`
//! checks, `jsonwebtoken::decode` into `keyfob_domain::Claims` with the same `Validation`, and the
//! permissions' parse. Keep the two in step.
//!
//! The signature check itself is replaced by a provider that accepts every signature, so that the
//! claims (which a real key would keep out of reach) are fuzzed too; the cryptography is
//! aws-lc-rs's and not what is tested here. The input is either the token text, or, when it starts
//! with `{`, a header and a claims document on two lines, encoded into a token here so that the
//! fuzzer works on the JSON directly.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::signature::{Error as SignatureError, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation, decode, decode_header};
use keyfob_domain::{Claims, PermissionSet};
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "http://127.0.0.1:8080";
const AUDIENCE: &str = "keyfob";
const LEEWAY_SECS: u64 = 30;

struct AcceptEverySignature(Algorithm);

impl Verifier<Vec<u8>> for AcceptEverySignature {
    fn verify(&self, _message: &[u8], _signature: &Vec<u8>) -> Result<(), SignatureError> {
        Ok(())
    }
}

impl JwtVerifier for AcceptEverySignature {
    fn algorithm(&self) -> Algorithm {
        self.0
    }
}

fn verifier(
    alg: &Algorithm,
    _key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    Ok(Box::new(AcceptEverySignature(*alg)))
}

fn no_signer(
    _alg: &Algorithm,
    _key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    Err(ErrorKind::InvalidAlgorithm.into())
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// What the server would answer, reduced to whether it accepts.
fn verify(token: &str) -> Option<(Claims, PermissionSet)> {
    let header = decode_header(token).ok()?;
    header.kid.as_deref()?;
    // The server's keys are EdDSA or ES256; the header's `alg` must be the key's.
    let alg = match header.alg {
        Algorithm::EdDSA | Algorithm::ES256 => header.alg,
        _ => return None,
    };
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    let key = DecodingKey::from_ed_der(&[0; 32]);
    let data = decode::<Claims>(token, &key, &validation).ok()?;
    let permissions = PermissionSet::parse(&data.claims.permissions).ok()?;
    Some((data.claims, permissions))
}

fuzz_target!(|data: &[u8]| {
    let _ = CryptoProvider::install_default(&PROVIDER);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let token = match text.strip_prefix('{') {
        Some(_) => {
            let (header, claims) = text.split_once('\n').unwrap_or((text, "{}"));
            format!(
                "{}.{}.c2lnbmF0dXJl",
                B64URL.encode(header.as_bytes()),
                B64URL.encode(claims.as_bytes())
            )
        }
        None => text.to_owned(),
    };
    let before = jsonwebtoken::get_current_timestamp() as i64;
    if let Some((claims, permissions)) = verify(&token) {
        let after = jsonwebtoken::get_current_timestamp() as i64;
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        assert!(claims.exp >= before - LEEWAY_SECS as i64);
        assert!(claims.nbf <= after + LEEWAY_SECS as i64);
        // The cache's check on a later request.
        let _still_valid = claims.exp.saturating_add(LEEWAY_SECS as i64) > after;
        assert!(matches!(permissions, PermissionSet::Only(_)));
        let back = PermissionSet::parse(permissions.to_strings()).unwrap();
        assert_eq!(back, permissions);
    }
});

//! An `id_token_hint` (OpenID Connect RP-Initiated Logout 1.0 §2): an ID token Keyfob issued,
//! which an application sends back to say whose logout it asks for and which of its sessions.
//!
//! It is checked as strictly as an access token is, but for its time: the specification accepts
//! an expired ID token as a hint (the application may keep it long after), so `exp` is not
//! checked. Its signature must be one of Keyfob's keys', its issuer Keyfob, and it must be an ID
//! token: header `typ: JWT`, an application as its audience, and none of an access token's claims.
//! Keyfob's access tokens are told apart by their `typ: at+jwt`, and the older ones signed with
//! `typ: JWT` by their audience (Keyfob's, never an application's) and their `permissions`.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use keyfob_domain::Timestamp;
use keyfob_domain::id_token::ID_TOKEN_TYP;
use keyfob_domain::ids::{ClientId, FamilyId, UserId};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{TokenError, TokenService};

/// What a hint is read for; the rest of an ID token's claims are not needed.
#[derive(Debug, Deserialize)]
struct HintClaims {
    sub: String,
    /// The application the token was issued to (a single client id).
    aud: String,
    /// The application the token was issued to, when it says so apart from `aud`.
    #[serde(default)]
    azp: Option<String>,
    /// The application's session (refresh family) the token belongs to.
    #[serde(default)]
    sid: Option<String>,
    /// Every access token Keyfob signs carries its permissions; an ID token never does.
    #[serde(default)]
    permissions: Option<IgnoredAny>,
    #[serde(default)]
    exp: Option<i64>,
}

/// A verified `id_token_hint`: whose it is, the application it was issued to and its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenHint {
    pub user_id: UserId,
    /// `azp` when given, else `aud`.
    pub client_id: ClientId,
    /// The session (refresh family) the ID token was issued in, if it names one.
    pub sid: Option<FamilyId>,
    /// Whether it has expired (still a good hint).
    pub expired: bool,
}

impl TokenService {
    /// Verifies an `id_token_hint`: signed by one of Keyfob's keys with that key's algorithm,
    /// issued by Keyfob, an ID token (`typ: JWT`, an application as audience, no permissions), with
    /// a subject. Expired tokens are accepted; [`IdTokenHint::expired`] says so.
    pub fn verify_id_token_hint(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<IdTokenHint, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.typ.as_deref() != Some(ID_TOKEN_TYP) {
            return Err(TokenError::NotAnIdToken);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let keys = self.keys();
        let verifier = keys.verifier(kid).ok_or_else(|| {
            if keys.is_retired(kid) {
                TokenError::RetiredKey
            } else {
                TokenError::UnknownKey
            }
        })?;
        if header.alg != verifier.alg {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(verifier.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        // The audience is the application, checked by the caller against the request.
        validation.validate_aud = false;
        validation.set_issuer(&[self.issuer()]);
        validation.set_required_spec_claims(&["iss", "sub", "aud"]);
        let data = decode::<HintClaims>(token, &verifier.key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
            _ => TokenError::Malformed,
        })?;
        let claims = data.claims;
        if claims.permissions.is_some() || claims.aud == self.audience() {
            return Err(TokenError::NotAnIdToken);
        }
        let client_id = claims.azp.unwrap_or(claims.aud);
        if claims.sub.is_empty() || client_id.is_empty() {
            return Err(TokenError::Malformed);
        }
        Ok(IdTokenHint {
            user_id: UserId::from(claims.sub),
            client_id: ClientId::from(client_id),
            sid: claims.sid.filter(|s| !s.is_empty()).map(FamilyId::from),
            expired: claims.exp.is_some_and(|exp| exp <= now.unix_secs()),
        })
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use keyfob_domain::Claims;
    use serde_json::json;

    use super::*;
    use crate::config::SigningAlg;
    use crate::crypto::MasterKey;
    use crate::tokens::keys::{generate_signing_key, load_key_set};

    const ISSUER: &str = "https://keyfob.example";

    fn service() -> TokenService {
        let master = MasterKey::generate();
        let epoch = Timestamp::UNIX_EPOCH;
        let row = generate_signing_key(SigningAlg::EdDsa, &master, epoch, epoch).unwrap();
        let keys = load_key_set(&[row], &master, epoch).unwrap();
        TokenService::new(keys, ISSUER.to_owned(), "keyfob".to_owned(), 1 << 20)
    }

    /// Signs `claims` with the service's key and the header `typ`.
    fn sign(tokens: &TokenService, typ: Option<&str>, claims: &serde_json::Value) -> String {
        let keys = tokens.keys();
        let signer = keys.signer(Timestamp::now()).unwrap();
        let mut header = Header::new(signer.alg);
        header.typ = typ.map(str::to_owned);
        header.kid = Some(signer.kid.to_string());
        encode(&header, claims, &signer.key).unwrap()
    }

    fn id_token_claims(exp: i64) -> serde_json::Value {
        json!({
            "iss": ISSUER, "sub": "user-1", "aud": "app_1", "azp": "app_1",
            "exp": exp, "iat": exp - 300, "auth_time": exp - 400, "sid": "fam-1",
        })
    }

    #[test]
    fn an_id_token_is_a_hint_even_expired() {
        let tokens = service();
        let now = Timestamp::now();
        let live = sign(
            &tokens,
            Some("JWT"),
            &id_token_claims(now.unix_secs() + 300),
        );
        let hint = tokens.verify_id_token_hint(&live, now).unwrap();
        assert_eq!(
            hint,
            IdTokenHint {
                user_id: "user-1".into(),
                client_id: "app_1".into(),
                sid: Some("fam-1".into()),
                expired: false,
            }
        );
        let old = sign(
            &tokens,
            Some("JWT"),
            &id_token_claims(now.unix_secs() - 86_400),
        );
        assert!(tokens.verify_id_token_hint(&old, now).unwrap().expired);
        // Without azp, the audience names the application.
        let mut claims = id_token_claims(now.unix_secs());
        claims.as_object_mut().unwrap().remove("azp");
        claims.as_object_mut().unwrap().remove("sid");
        let hint = tokens
            .verify_id_token_hint(&sign(&tokens, Some("JWT"), &claims), now)
            .unwrap();
        assert_eq!((hint.client_id.as_str(), hint.sid), ("app_1", None));
    }

    #[test]
    fn access_tokens_and_forgeries_are_not_hints() {
        let tokens = service();
        let now = Timestamp::now();
        let secs = now.unix_secs();
        // A session's access token, as Keyfob signs it (typ at+jwt).
        let access = Claims {
            iss: ISSUER.into(),
            sub: "user-1".into(),
            aud: "keyfob".into(),
            iat: secs,
            nbf: secs,
            exp: secs + 600,
            jti: "jti-1".into(),
            permissions: vec!["deals.read".into()],
            scope: Some("deals.read".into()),
            account_id: "acc".into(),
            client_id: Some("app_1".into()),
            sid: Some("fam-1".into()),
            gty: None,
        };
        let signed = tokens.sign(&access, now).unwrap();
        assert_eq!(
            tokens.verify_id_token_hint(&signed, now),
            Err(TokenError::NotAnIdToken)
        );
        // One signed before RFC 9068, with typ JWT: told apart by its audience and permissions.
        let old = sign(
            &tokens,
            Some("JWT"),
            &serde_json::to_value(&access).unwrap(),
        );
        assert_eq!(
            tokens.verify_id_token_hint(&old, now),
            Err(TokenError::NotAnIdToken)
        );
        let mut aud_only = id_token_claims(secs);
        aud_only["aud"] = "keyfob".into();
        aud_only.as_object_mut().unwrap().remove("azp");
        assert_eq!(
            tokens.verify_id_token_hint(&sign(&tokens, Some("JWT"), &aud_only), now),
            Err(TokenError::NotAnIdToken)
        );
        // No typ at all.
        assert_eq!(
            tokens.verify_id_token_hint(&sign(&tokens, None, &id_token_claims(secs)), now),
            Err(TokenError::NotAnIdToken)
        );
        // Another issuer.
        let mut elsewhere = id_token_claims(secs);
        elsewhere["iss"] = "https://evil.test".into();
        assert_eq!(
            tokens.verify_id_token_hint(&sign(&tokens, Some("JWT"), &elsewhere), now),
            Err(TokenError::WrongIssuer)
        );
        // Another key: signed by a service that is not this one, with the same kid.
        let other = service();
        let forged = {
            let keys = tokens.keys();
            let kid = keys.signer(now).unwrap().kid.to_string();
            let other_keys = other.keys();
            let signer = other_keys.signer(now).unwrap();
            let mut header = Header::new(signer.alg);
            header.typ = Some("JWT".into());
            header.kid = Some(kid);
            encode(&header, &id_token_claims(secs), &signer.key).unwrap()
        };
        assert_eq!(
            tokens.verify_id_token_hint(&forged, now),
            Err(TokenError::BadSignature)
        );
        // A key Keyfob never had.
        assert_eq!(
            tokens.verify_id_token_hint(&sign(&other, Some("JWT"), &id_token_claims(secs)), now),
            Err(TokenError::UnknownKey)
        );
        // A symmetric token with a known kid: the algorithm is not the key's.
        let hs = {
            let keys = tokens.keys();
            let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
            header.typ = Some("JWT".into());
            header.kid = Some(keys.signer(now).unwrap().kid.to_string());
            encode(
                &header,
                &id_token_claims(secs),
                &EncodingKey::from_secret(b"k"),
            )
            .unwrap()
        };
        assert_eq!(
            tokens.verify_id_token_hint(&hs, now),
            Err(TokenError::WrongAlgorithm)
        );
        for garbage in ["", "garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
            assert!(
                tokens.verify_id_token_hint(garbage, now).is_err(),
                "{garbage}"
            );
        }
    }
}

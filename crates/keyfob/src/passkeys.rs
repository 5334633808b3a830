//! Passkeys (WebAuthn) for owners and end users, the same for both sets of pages: the ceremonies
//! are the `webauthn_rp` crate's, the rows `keyfob_store::PasskeyStore`'s; here is what joins them.
//!
//! - **Relying party**: its id is the host of the public URL and the only origin accepted is that
//!   URL's origin ([`RelyingParty`]).
//! - **Ceremonies**: each page that starts one (registration, or a sign-in) keeps its server half
//!   here in memory ([`Ceremonies`]), keyed by the random challenge, bound to whom it was started
//!   for (the owner or user registering, or which pages sign in), for five minutes, and taken out
//!   by the first response that names its challenge: a challenge is answered once. A node keeps
//!   its own ceremonies, so behind a load balancer the pages need sticky sessions.
//! - **Credentials** are discoverable and require user verification (a PIN or biometric on the
//!   authenticator), so a sign-in with one stands for both factors and skips the TOTP step.
//! - **Signature counters** must move forward; a counter that does not (a cloned authenticator)
//!   fails the sign-in, and the new counter is recorded by one conditional UPDATE against the one
//!   checked, so a replayed or concurrent assertion is refused too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use keyfob_domain::time::Timestamp;
use keyfob_store::{FactorHolder, PasskeyRow, PasskeyUse, StoreError};
use sha2::{Digest, Sha256};
use webauthn_rp::bin::{Decode, Encode};
use webauthn_rp::request::auth::{
    AuthenticationVerificationOptions, DiscoverableAuthenticationServerState,
    DiscoverableCredentialRequestOptions,
};
use webauthn_rp::request::register::{
    CredProtect, PublicKeyCredentialCreationOptions, PublicKeyCredentialUserEntity,
    RegistrationServerState, RegistrationVerificationOptions, UserHandle16, Username,
};
use webauthn_rp::request::{AsciiDomain, ExtensionInfo, PublicKeyCredentialDescriptor, RpId};
use webauthn_rp::response::auth::DiscoverableAuthentication16;
use webauthn_rp::response::auth::error::AuthCeremonyErr;
use webauthn_rp::response::register::{CompressedPubKey, DynamicState, StaticState};
use webauthn_rp::response::{AuthTransports, CredentialId, SentChallenge};
use webauthn_rp::{AuthenticatedCredential, Registration};

use crate::logins::LoginKind;
use crate::state::AppState;

/// How long a started ceremony may be answered.
pub const CEREMONY_LIFETIME: Duration = Duration::from_secs(300);
/// How many ceremonies of each kind a node keeps at once; past that a new one replaces the
/// oldest.
const MAX_CEREMONIES: usize = 10_000;
/// The longest name a passkey may be given.
pub const MAX_NAME_CHARS: usize = 64;

/// Why a ceremony's response was refused. Every one is the client's doing (a 4xx), except
/// [`PasskeyError::Store`] and [`PasskeyError::Unavailable`].
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The response is not a WebAuthn response of the kind expected.
    #[error("the response is not a passkey response")]
    Malformed,
    /// Its challenge was never given, was answered already, expired, or was given to someone
    /// else.
    #[error("the passkey request expired or was already used; start again")]
    NoCeremony,
    /// No passkey with its credential id is registered (for these pages).
    #[error("this passkey is not registered here")]
    UnknownCredential,
    /// The assertion or attestation did not verify (signature, origin, user verification, …).
    #[error("the passkey could not be verified")]
    Refused {
        holder: Option<FactorHolder>,
        reason: String,
    },
    /// The signature counter did not move forward: a cloned authenticator, or a replay.
    #[error("the passkey's signature counter went backwards; it may have been copied")]
    Counter { holder: FactorHolder },
    /// A passkey with this credential id is registered already.
    #[error("this passkey is registered already")]
    Duplicate,
    /// The name is empty or too long.
    #[error("give the passkey a name of 1 to {MAX_NAME_CHARS} characters")]
    BadName,
    /// Passkeys cannot be offered: the public URL's host is no domain, or the options could not
    /// be made for this account's email.
    #[error("passkeys are unavailable right now")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The relying party: the id (host of the public URL) and the one origin accepted.
pub struct RelyingParty {
    id: RpId,
    origin: String,
}

impl RelyingParty {
    /// The relying party of the configured public URL (or the listen address without one).
    pub fn of(config: &crate::config::Config) -> Result<RelyingParty, PasskeyError> {
        let issuer = config.issuer();
        let (scheme, rest) = issuer.split_once("://").ok_or(PasskeyError::Unavailable)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        };
        let domain = AsciiDomain::try_from(host.to_ascii_lowercase())
            .map_err(|_| PasskeyError::Unavailable)?;
        Ok(RelyingParty {
            id: RpId::Domain(domain),
            origin: format!("{scheme}://{}", authority.to_ascii_lowercase()),
        })
    }

    /// The origin a response must come from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

struct Pending<T, B> {
    server: T,
    bound: B,
    expires: Instant,
}

type Registrations = HashMap<u128, Pending<RegistrationServerState<16>, FactorHolder>>;
type SignIns = HashMap<u128, Pending<DiscoverableAuthenticationServerState, LoginKind>>;

/// The ceremonies in progress on this node (see the module's doc).
#[derive(Default)]
pub struct Ceremonies {
    registrations: Mutex<Registrations>,
    sign_ins: Mutex<SignIns>,
}

fn insert<T, B>(map: &Mutex<HashMap<u128, Pending<T, B>>>, key: u128, pending: Pending<T, B>) {
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if map.len() >= MAX_CEREMONIES {
        let now = Instant::now();
        map.retain(|_, p| p.expires > now);
        // Still full: the oldest goes. A flood of page loads must then outpace a person between
        // loading a page and answering it to take their ceremony, rather than only fill the map
        // to stop every new one.
        if map.len() >= MAX_CEREMONIES
            && let Some(oldest) = map.iter().min_by_key(|(_, p)| p.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
    }
    map.insert(key, pending);
}

fn take<T, B>(map: &Mutex<HashMap<u128, Pending<T, B>>>, key: u128) -> Option<(T, B)> {
    let mut map = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let pending = map.remove(&key)?;
    (pending.expires > Instant::now()).then_some((pending.server, pending.bound))
}

/// The user handle a holder's passkeys carry: derived from who they are, so that one holder's
/// passkeys share it (an authenticator keeps one passkey per user and site) and nothing about
/// them is stored on the authenticator but this hash.
fn user_handle(holder: &FactorHolder) -> UserHandle16 {
    let digest = Sha256::digest(format!(
        "keyfob passkey user v1:{}:{}",
        holder.kind(),
        holder.id()
    ));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    UserHandle16::from(bytes)
}

fn holder_kind(holder: &FactorHolder) -> LoginKind {
    match holder {
        FactorHolder::Owner(_) => LoginKind::Owner,
        FactorHolder::User(_) => LoginKind::User,
    }
}

/// Checks and trims a passkey's name.
pub fn parse_name(name: &str) -> Result<String, PasskeyError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(PasskeyError::BadName);
    }
    Ok(name.to_owned())
}

/// Starts registering a passkey for `holder` (known to the authenticator as `email`, or by their
/// id when the email is no valid user name), who has the passkeys `existing`: the options for
/// `navigator.credentials.create`, as JSON. An authenticator that holds one of `existing`
/// already declines, rather than replace it.
pub fn start_registration(
    state: &AppState,
    holder: &FactorHolder,
    email: &str,
    existing: &[PasskeyRow],
) -> Result<String, PasskeyError> {
    let rp = RelyingParty::of(&state.config)?;
    let handle = user_handle(holder);
    let name = Username::try_from(email)
        .or_else(|_| Username::try_from(holder.id()))
        .map_err(|_| PasskeyError::Unavailable)?;
    let user = PublicKeyCredentialUserEntity {
        name,
        id: &handle,
        display_name: None,
    };
    let exclude = existing
        .iter()
        .filter_map(|row| URL_SAFE_NO_PAD.decode(&row.credential_id).ok())
        .filter_map(|id| {
            let id = CredentialId::try_from(id.as_slice()).ok()?;
            Some(PublicKeyCredentialDescriptor {
                id: CredentialId::<Vec<u8>>::from(id),
                transports: AuthTransports::NONE,
            })
        })
        .collect();
    let mut options = PublicKeyCredentialCreationOptions::passkey(&rp.id, user, exclude);
    // Ask that the authenticator require user verification for this credential where it can,
    // without refusing those that cannot say (user verification is required at every sign-in
    // regardless).
    options.extensions.cred_protect =
        CredProtect::UserVerificationRequired(ExtensionInfo::AllowDontEnforceValue);
    let (server, client) = options
        .start_ceremony()
        .map_err(|_| PasskeyError::Unavailable)?;
    let json = serde_json::to_string(&client).map_err(|_| PasskeyError::Unavailable)?;
    let challenge = challenge_of_options(&json)?;
    let pending = Pending {
        server,
        bound: holder.clone(),
        expires: Instant::now() + CEREMONY_LIFETIME,
    };
    insert(&state.passkeys.registrations, challenge, pending);
    Ok(json)
}

/// The challenge of options the crate serialised, as the response will name it.
fn challenge_of_options(json: &str) -> Result<u128, PasskeyError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|_| PasskeyError::Unavailable)?;
    let encoded = value
        .get("publicKey")
        .unwrap_or(&value)
        .get("challenge")
        .and_then(serde_json::Value::as_str)
        .ok_or(PasskeyError::Unavailable)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| PasskeyError::Unavailable)?;
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| PasskeyError::Unavailable)?;
    Ok(u128::from_le_bytes(bytes))
}

fn key_of(challenge: SentChallenge) -> u128 {
    challenge.0
}

/// Finishes a registration `holder` started: verifies the response (`PublicKeyCredential`'s
/// `toJSON()`) against the ceremony its challenge names and stores the passkey as `name`.
pub async fn finish_registration(
    state: &AppState,
    holder: &FactorHolder,
    name: &str,
    response: &str,
) -> Result<PasskeyRow, PasskeyError> {
    let name = parse_name(name)?;
    let registration: Registration =
        serde_json::from_str(response).map_err(|_| PasskeyError::Malformed)?;
    let challenge = registration
        .challenge()
        .map_err(|_| PasskeyError::Malformed)?;
    let (server, bound) =
        take(&state.passkeys.registrations, key_of(challenge)).ok_or(PasskeyError::NoCeremony)?;
    if &bound != holder {
        return Err(PasskeyError::NoCeremony);
    }
    let rp = RelyingParty::of(&state.config)?;
    let origins = [rp.origin.as_str()];
    let options = RegistrationVerificationOptions::<&str, &str> {
        allowed_origins: &origins,
        ..RegistrationVerificationOptions::default()
    };
    let credential = server
        .verify(&rp.id, &registration, &options)
        .map_err(|err| PasskeyError::Refused {
            holder: Some(holder.clone()),
            reason: err.to_string(),
        })?;
    let (id, _, _, static_state, dynamic_state, _) = credential.into_parts();
    let Ok(public_key) = static_state.encode();
    let Ok(dynamic) = dynamic_state.encode();
    let row = PasskeyRow {
        credential_id: URL_SAFE_NO_PAD.encode(id.as_ref()),
        holder: holder.clone(),
        name,
        public_key: STANDARD.encode(public_key),
        dynamic_state: STANDARD.encode(dynamic),
        sign_count: i64::from(dynamic_state.sign_count),
        created_at: Timestamp::now(),
        last_used_at: None,
    };
    if !state.store.insert_passkey(&row).await? {
        return Err(PasskeyError::Duplicate);
    }
    Ok(row)
}

/// Starts a sign-in on `kind`'s pages: the options for `navigator.credentials.get`, as JSON.
pub fn start_sign_in(state: &AppState, kind: LoginKind) -> Result<String, PasskeyError> {
    let rp = RelyingParty::of(&state.config)?;
    let (server, client) = DiscoverableCredentialRequestOptions::passkey(&rp.id)
        .start_ceremony()
        .map_err(|_| PasskeyError::Unavailable)?;
    let json = serde_json::to_string(&client).map_err(|_| PasskeyError::Unavailable)?;
    let challenge = challenge_of_options(&json)?;
    let pending = Pending {
        server,
        bound: kind,
        expires: Instant::now() + CEREMONY_LIFETIME,
    };
    insert(&state.passkeys.sign_ins, challenge, pending);
    Ok(json)
}

type StoredKey = CompressedPubKey<[u8; 32], [u8; 32], [u8; 48], Vec<u8>>;

fn corrupt(what: &str) -> PasskeyError {
    PasskeyError::Store(StoreError::Corrupt(format!("a passkey's {what}")))
}

/// Finishes a sign-in on `kind`'s pages: verifies the assertion (`toJSON()` of the credential)
/// against the ceremony its challenge names and the passkey its credential id names, and
/// records the use. The passkey (as it was before) is whose it is.
pub async fn finish_sign_in(
    state: &AppState,
    kind: LoginKind,
    response: &str,
) -> Result<PasskeyRow, PasskeyError> {
    let assertion: DiscoverableAuthentication16 =
        serde_json::from_str(response).map_err(|_| PasskeyError::Malformed)?;
    let challenge = assertion.challenge().map_err(|_| PasskeyError::Malformed)?;
    let (server, bound) =
        take(&state.passkeys.sign_ins, key_of(challenge)).ok_or(PasskeyError::NoCeremony)?;
    if bound != kind {
        return Err(PasskeyError::NoCeremony);
    }
    let credential_id = URL_SAFE_NO_PAD.encode(assertion.raw_id().as_ref());
    let row = state
        .store
        .find_passkey(&credential_id)
        .await?
        .filter(|row| holder_kind(&row.holder) == kind)
        .ok_or(PasskeyError::UnknownCredential)?;
    let public_key = STANDARD
        .decode(&row.public_key)
        .map_err(|_| corrupt("public key"))?;
    let static_state = StaticState::<StoredKey>::decode(public_key.as_slice())
        .map_err(|_| corrupt("public key"))?;
    let dynamic: [u8; 7] = STANDARD
        .decode(&row.dynamic_state)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| corrupt("state"))?;
    let dynamic_state = DynamicState::decode(dynamic).map_err(|_| corrupt("state"))?;
    let handle = user_handle(&row.holder);
    let raw_id = URL_SAFE_NO_PAD
        .decode(&row.credential_id)
        .map_err(|_| corrupt("id"))?;
    let id = CredentialId::try_from(raw_id.as_slice()).map_err(|_| corrupt("id"))?;
    let mut credential = AuthenticatedCredential::new(id, &handle, static_state, dynamic_state)
        .map_err(|_| corrupt("state"))?;
    let rp = RelyingParty::of(&state.config)?;
    let origins = [rp.origin.as_str()];
    let options = AuthenticationVerificationOptions::<&str, &str> {
        allowed_origins: &origins,
        ..AuthenticationVerificationOptions::default()
    };
    match server.verify(&rp.id, &assertion, &mut credential, &options) {
        Ok(_) => {}
        Err(AuthCeremonyErr::SignatureCounter) => {
            return Err(PasskeyError::Counter {
                holder: row.holder.clone(),
            });
        }
        Err(err) => {
            return Err(PasskeyError::Refused {
                holder: Some(row.holder.clone()),
                reason: err.to_string(),
            });
        }
    }
    let new_state = credential.dynamic_state();
    let Ok(encoded) = new_state.encode();
    let recorded = state
        .store
        .record_passkey_use(&PasskeyUse {
            credential_id: &row.credential_id,
            expected_sign_count: row.sign_count,
            dynamic_state: &STANDARD.encode(encoded),
            sign_count: i64::from(new_state.sign_count),
            at: Timestamp::now(),
        })
        .await?;
    if !recorded {
        // Another sign-in with this passkey was recorded since it was read: the same counter
        // used twice.
        return Err(PasskeyError::Counter {
            holder: row.holder.clone(),
        });
    }
    Ok(row)
}

/// A passkey as the list shows it.
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created: crate::dashboard::page::TimeView,
    pub last_used: Option<crate::dashboard::page::TimeView>,
}

impl From<keyfob_store::PasskeyRow> for PasskeyView {
    fn from(row: keyfob_store::PasskeyRow) -> Self {
        PasskeyView {
            id: row.credential_id,
            name: row.name,
            created: row.created_at.into(),
            last_used: row.last_used_at.map(Into::into),
        }
    }
}

/// The Content-Security-Policy of the pages that run the passkey script: the pages' own, with
/// scripts from Keyfob itself allowed (no inline script, no other origin).
pub const SCRIPT_CSP: &str = "default-src 'self'; script-src 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The script that calls `navigator.credentials.create` and `.get`, served as a file.
pub const SCRIPT: &str = include_str!("passkeys.js");

/// `GET /dashboard/static/passkeys.js`.
pub async fn script() -> impl axum::response::IntoResponse {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SCRIPT,
    )
}

impl From<PasskeyError> for crate::web::PageError {
    fn from(err: PasskeyError) -> Self {
        match err {
            PasskeyError::Store(err) => err.into(),
            PasskeyError::Unavailable => crate::web::PageError::Rejected {
                status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
                message: err.to_string(),
            },
            other => crate::web::PageError::BadRequest(other.to_string()),
        }
    }
}

impl PasskeyError {
    /// What the audit log says of a refused sign-in, and about whom, when it is worth recording:
    /// one whose passkey was found.
    pub fn audited(&self) -> Option<(&FactorHolder, String)> {
        match self {
            PasskeyError::Refused {
                holder: Some(holder),
                reason,
            } => Some((holder, reason.clone())),
            PasskeyError::Counter { holder } => Some((holder, "signature counter".to_owned())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name("  Laptop ").unwrap(), "Laptop");
        assert!(parse_name("   ").is_err());
        assert!(parse_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(parse_name("a\nb").is_err());
    }

    #[test]
    fn a_ceremony_is_taken_once_and_not_after_it_expires() {
        let map: Mutex<HashMap<u128, Pending<(), LoginKind>>> = Mutex::default();
        let live = Pending {
            server: (),
            bound: LoginKind::Owner,
            expires: Instant::now() + CEREMONY_LIFETIME,
        };
        insert(&map, 1, live);
        assert!(take(&map, 2).is_none(), "another challenge");
        assert_eq!(take(&map, 1).map(|(_, kind)| kind), Some(LoginKind::Owner));
        assert!(take(&map, 1).is_none(), "answered once");
        let expired = Pending {
            server: (),
            bound: LoginKind::User,
            expires: Instant::now(),
        };
        insert(&map, 3, expired);
        assert!(take(&map, 3).is_none(), "expired");
    }

    #[test]
    fn a_full_set_of_ceremonies_drops_the_oldest() {
        let map: Mutex<HashMap<u128, Pending<(), LoginKind>>> = Mutex::default();
        let start = Instant::now() + CEREMONY_LIFETIME;
        for key in 0..MAX_CEREMONIES {
            let expires = start + Duration::from_millis(u64::try_from(key).unwrap());
            insert(
                &map,
                key as u128,
                Pending {
                    server: (),
                    bound: LoginKind::User,
                    expires,
                },
            );
        }
        let newest = Pending {
            server: (),
            bound: LoginKind::User,
            expires: start + Duration::from_secs(60),
        };
        insert(&map, u128::MAX, newest);
        assert!(take(&map, 0).is_none(), "the oldest went");
        assert!(take(&map, 1).is_some());
        assert!(take(&map, u128::MAX).is_some());
    }

    #[test]
    fn the_relying_party_is_the_public_urls_host_and_origin() {
        let mut config = crate::config::Config::for_data_dir(std::path::Path::new("/tmp"));
        config.public_url = Some("https://Auth.Example.com:8443/base/".into());
        let rp = RelyingParty::of(&config).unwrap();
        assert_eq!(rp.origin(), "https://auth.example.com:8443");
        assert!(matches!(&rp.id, RpId::Domain(d) if d.as_ref() == "auth.example.com"));
    }

    #[test]
    fn a_holder_has_one_user_handle_and_owners_differ_from_users() {
        let owner = FactorHolder::Owner("o1".to_owned().into());
        let user = FactorHolder::User("o1".to_owned().into());
        assert_eq!(user_handle(&owner).as_ref(), user_handle(&owner).as_ref());
        assert_ne!(user_handle(&owner).as_ref(), user_handle(&user).as_ref());
    }
}

//! The UserInfo endpoint (OpenID Connect Core 1.0 §5.3): who the user of a session is, told to
//! the application holding the session's access token, with the claims its identity scopes
//! release. The token is checked as on every other route (signature, expiry, revocation, an
//! ended session), from memory; the user is then read for the claims.

use crate::auth::authenticate;
use crate::http::error::ApiError;
use crate::http::oauth::{OAuthError, OAuthErrorBody, OAuthParams};
use crate::http::openapi::OAuthUnavailable;
use crate::state::AppState;
use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyfob_domain::id_token::UserClaims;
use keyfob_domain::time::Timestamp;
use keyfob_domain::{Credential, PrincipalKind};

/// Why userinfo was refused (RFC 6750 §3.1): the error goes in `WWW-Authenticate` and in the
/// body.
#[derive(Debug)]
pub enum UserInfoError {
    /// The token sent twice, or a form that cannot be read: 400 `invalid_request`.
    InvalidRequest(String),
    /// No token, or one that does not verify, has expired or was revoked: 401 `invalid_token`.
    InvalidToken(String),
    /// A good token that is not a user's, or not issued with `openid`: 403 `insufficient_scope`.
    InsufficientScope(&'static str),
    /// A body refused before it was read (too large, unreadable text), as the OAuth endpoints
    /// refuse one.
    Refused(OAuthError),
    Api(ApiError),
}

impl From<ApiError> for UserInfoError {
    fn from(err: ApiError) -> Self {
        UserInfoError::Api(err)
    }
}

impl From<keyfob_store::StoreError> for UserInfoError {
    fn from(err: keyfob_store::StoreError) -> Self {
        UserInfoError::Api(err.into())
    }
}

impl IntoResponse for UserInfoError {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            UserInfoError::InvalidRequest(why) => (StatusCode::BAD_REQUEST, "invalid_request", why),
            UserInfoError::InvalidToken(why) => (StatusCode::UNAUTHORIZED, "invalid_token", why),
            UserInfoError::InsufficientScope(why) => {
                (StatusCode::FORBIDDEN, "insufficient_scope", why.to_owned())
            }
            // An outage or a failure: in the OAuth endpoints' format (`temporarily_unavailable`).
            UserInfoError::Api(err) => return OAuthError::from(err).into_response(),
            UserInfoError::Refused(err) => return err.into_response(),
        };
        let challenge = format!(
            "Bearer error=\"{error}\", error_description=\"{}\"",
            description.replace(['"', '\\'], "'")
        );
        let mut response = (
            status,
            Json(OAuthErrorBody {
                error: error.to_owned(),
                error_description: description,
            }),
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// `POST /auth/userinfo`'s optional form (or JSON) body.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInfoForm {
    /// The access token, when it is not in the `Authorization` header (RFC 6750 §2.2).
    pub access_token: Option<String>,
}

const NOT_A_USERS: &str =
    "userinfo answers only the access token of a user's session that was granted `openid`";

/// The user of a session.
///
/// With a session's access token whose scope includes `openid`: `sub` always; `email` and
/// `email_verified` with `email`; `updated_at` with `profile`. GET and POST alike.
#[utoipa::path(
    get,
    path = "/auth/userinfo",
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's claims", content_type = "application/json", body = Object),
        (status = 401, description = "No token, or an invalid, expired or revoked one", body = OAuthErrorBody),
        (status = 403, description = "Not a user's token, or granted without `openid`", body = OAuthErrorBody),
        (status = 503, response = OAuthUnavailable),
    )
)]
pub async fn userinfo(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, UserInfoError> {
    answer(&state, &headers).await
}

/// The user of a session, asked with POST (the same answer as GET).
///
/// The access token goes in `Authorization: Bearer`, or (RFC 6750 §2.2) as `access_token` in a
/// form body; never both.
#[utoipa::path(
    post,
    path = "/auth/userinfo",
    tag = "sessions",
    security(("bearer" = [])),
    request_body(content = UserInfoForm, content_type = "application/x-www-form-urlencoded",
        description = "Optional: the access token as `access_token`, instead of the header"),
    responses(
        (status = 200, description = "The user's claims", content_type = "application/json", body = Object),
        (status = 400, description = "The token sent twice, or an unreadable form", body = OAuthErrorBody),
        (status = 401, description = "No token, or an invalid, expired or revoked one", body = OAuthErrorBody),
        (status = 403, description = "Not a user's token, or granted without `openid`", body = OAuthErrorBody),
        (status = 503, response = OAuthUnavailable),
    )
)]
pub async fn userinfo_post(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, UserInfoError> {
    let headers = request.headers().clone();
    // A POST without a body carries the token in its header. A body is read as at the other OAuth
    // endpoints: a form or JSON within the size limit, every field text Keyfob accepts (else
    // refused by name); a body of another type, or of none, is refused.
    let has_body = headers.contains_key(header::CONTENT_TYPE)
        || headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    let in_body = if has_body {
        let OAuthParams(form) = OAuthParams::<UserInfoForm>::from_request(request, &state)
            .await
            .map_err(UserInfoError::Refused)?;
        form.access_token.filter(|t| !t.is_empty())
    } else {
        None
    };
    match (in_body, headers.contains_key(AUTHORIZATION)) {
        (Some(_), true) => Err(UserInfoError::InvalidRequest(
            "send the access token once: in the Authorization header or in the body, not both"
                .into(),
        )),
        (Some(token), false) => {
            let mut headers = headers;
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                UserInfoError::InvalidToken("the access token is not a token".into())
            })?;
            headers.insert(AUTHORIZATION, value);
            answer(&state, &headers).await
        }
        (None, _) => answer(&state, &headers).await,
    }
}

async fn answer(state: &AppState, headers: &HeaderMap) -> Result<Response, UserInfoError> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| {
            UserInfoError::InvalidToken(
                "send the access token as `Authorization: Bearer <token>` (or, with POST, as \
                 `access_token` in a form body)"
                    .into(),
            )
        })?
        .to_str()
        .map_err(|_| UserInfoError::InvalidToken("the Authorization header is not text".into()))?;
    let principal = authenticate(state, header).map_err(|err| match err {
        ApiError::Unauthorized(why) => UserInfoError::InvalidToken(why),
        other => UserInfoError::Api(other),
    })?;
    let user_id = match principal.kind {
        PrincipalKind::Jwt {
            user_id: Some(user_id),
            ..
        } => user_id,
        _ => return Err(UserInfoError::InsufficientScope(NOT_A_USERS)),
    };
    // Verified a moment ago: this reads the verified-token cache.
    let Ok(Credential::Jwt(token)) = Credential::from_header(header) else {
        return Err(UserInfoError::InsufficientScope(NOT_A_USERS));
    };
    let verified = state
        .tokens
        .verify(&token, Timestamp::now())
        .map_err(|err| UserInfoError::InvalidToken(err.to_string()))?;
    let scopes = verified.claims.identity();
    if !scopes.openid {
        return Err(UserInfoError::InsufficientScope(NOT_A_USERS));
    }
    let user =
        state.store.find_user(&user_id).await?.ok_or_else(|| {
            UserInfoError::InvalidToken("the token's user no longer exists".into())
        })?;
    let claims = UserClaims::new(&crate::sessions::user_facts(&user), scopes);
    let mut response = Json(claims).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

//! What a Keyfob JWT says. The same claims for minted tokens and for user-session access tokens;
//! the latter also name the application and the session.

use serde::{Deserialize, Serialize};

/// The claims of every token Keyfob signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The subject: the API key that minted the token, or the end user of a session.
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub permissions: Vec<String>,
    /// The account (tenant) the token acts in.
    pub account_id: String,
    /// For user sessions: the application the user granted access to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// For user sessions: the session (refresh-token family) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

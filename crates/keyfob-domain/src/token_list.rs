//! How a listing of an account's minted tokens is asked for: by the key that minted them, by a
//! permission they carry, by state (live, revoked, expired), a page at a time.

use crate::ids::KeyId;
use crate::permission::Permission;
use crate::query::{parse_limit, parse_page};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;
pub const MAX_PAGE: u32 = crate::query::MAX_PAGE;

/// The state of a minted token at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// Neither revoked nor expired.
    Live,
    /// Revoked: itself, by its API key's revocation, or with all the tokens of its key.
    Revoked,
    /// Past its expiry, not revoked.
    Expired,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Live => "live",
            TokenStatus::Revoked => "revoked",
            TokenStatus::Expired => "expired",
        }
    }
}

/// A parsed token listing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenQuery {
    pub limit: u32,
    pub page: u32,
    /// Only tokens minted by this API key (its id).
    pub key: Option<KeyId>,
    /// Only tokens carrying exactly this permission.
    pub permission: Option<Permission>,
    pub status: Option<TokenStatus>,
    /// Only tokens whose name or metadata contains this text.
    pub text: Option<String>,
}

/// The longest text a token search may look for, in characters.
pub const MAX_SEARCH_LEN: usize = 100;

impl Default for TokenQuery {
    fn default() -> Self {
        TokenQuery {
            limit: DEFAULT_LIMIT,
            page: 1,
            key: None,
            permission: None,
            status: None,
            text: None,
        }
    }
}

/// Why a token listing request was refused; each names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenQueryError {
    #[error("`limit` must be a whole number from 1 to {MAX_LIMIT}")]
    Limit,
    #[error("`page` must be a whole number from 1 to {MAX_PAGE}")]
    Page,
    #[error("`key` must be the id of an API key, e.g. 0190b6f2-…")]
    Key,
    #[error("`permission` must be one permission such as deals.read: {0}")]
    Permission(String),
    #[error("`status` must be live, revoked or expired")]
    Status,
    #[error("`q` must be at most {MAX_SEARCH_LEN} characters, without control characters")]
    Text,
    #[error("`{0}` is not a known query parameter")]
    Unknown(String),
    #[error("`{0}` is given more than once")]
    Repeated(&'static str),
}

impl TokenQuery {
    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.limit)
    }

    /// Reads the query string's pairs. An empty filter (an untouched form field) means "no
    /// filter"; an empty `limit` or `page` is refused.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<TokenQuery, TokenQueryError> {
        let mut query = TokenQuery::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in pairs {
            let name: &'static str = match key.as_str() {
                "limit" => "limit",
                "page" => "page",
                "key" => "key",
                "permission" => "permission",
                "status" => "status",
                "q" => "q",
                other => return Err(TokenQueryError::Unknown(other.chars().take(80).collect())),
            };
            if seen.contains(&name) {
                return Err(TokenQueryError::Repeated(name));
            }
            seen.push(name);
            let value = value.trim();
            match name {
                // Paging is never a filter: an empty value is refused as list queries refuse it.
                "limit" => {
                    query.limit = parse_limit(value, MAX_LIMIT).ok_or(TokenQueryError::Limit)?;
                }
                "page" => {
                    query.page = parse_page(value).ok_or(TokenQueryError::Page)?;
                }
                _ if value.is_empty() => {}
                "key" => {
                    // Key ids are UUIDs; anything else cannot name one.
                    let id = uuid::Uuid::try_parse(value).map_err(|_| TokenQueryError::Key)?;
                    query.key = Some(KeyId::from(id.hyphenated().to_string()));
                }
                "permission" => {
                    let permission = value.parse::<Permission>().map_err(|e| {
                        TokenQueryError::Permission(e.to_string().chars().take(120).collect())
                    })?;
                    query.permission = Some(permission);
                }
                "status" => {
                    query.status = Some(match value {
                        "live" => TokenStatus::Live,
                        "revoked" => TokenStatus::Revoked,
                        "expired" => TokenStatus::Expired,
                        _ => return Err(TokenQueryError::Status),
                    });
                }
                "q" => {
                    if value.chars().count() > MAX_SEARCH_LEN || value.chars().any(char::is_control)
                    {
                        return Err(TokenQueryError::Text);
                    }
                    query.text = Some(value.to_owned());
                }
                _ => unreachable!("every name is matched above"),
            }
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<TokenQuery, TokenQueryError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TokenQuery::from_pairs(&owned)
    }

    #[test]
    fn defaults_and_full_query() {
        assert_eq!(q(&[]).unwrap(), TokenQuery::default());
        let id = "0190b6f2-7c4e-7a3b-8c9d-0123456789ab";
        let query = q(&[
            ("key", id),
            ("permission", "deals.write"),
            ("status", "revoked"),
            ("limit", "10"),
            ("page", "3"),
        ])
        .unwrap();
        assert_eq!(query.key.as_deref(), Some(id));
        assert_eq!(
            query.permission.as_ref().unwrap().to_string(),
            "deals.write"
        );
        assert_eq!(query.status, Some(TokenStatus::Revoked));
        assert_eq!(query.offset(), 20);
    }

    #[test]
    fn empty_values_mean_no_filter() {
        let query = q(&[("key", ""), ("permission", " "), ("status", "")]).unwrap();
        assert_eq!(query, TokenQuery::default());
        assert_eq!(q(&[("page", "")]), Err(TokenQueryError::Page));
        assert_eq!(q(&[("limit", " ")]), Err(TokenQueryError::Limit));
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(q(&[("page", "0")]), Err(TokenQueryError::Page));
        assert_eq!(q(&[("page", "-1")]), Err(TokenQueryError::Page));
        assert_eq!(q(&[("page", "two")]), Err(TokenQueryError::Page));
        assert_eq!(q(&[("limit", "201")]), Err(TokenQueryError::Limit));
        assert_eq!(q(&[("key", "'; drop table")]), Err(TokenQueryError::Key));
        assert!(matches!(
            q(&[("permission", "deals.delete")]),
            Err(TokenQueryError::Permission(_))
        ));
        assert!(matches!(
            q(&[("permission", "\"%_")]),
            Err(TokenQueryError::Permission(_))
        ));
        assert_eq!(q(&[("status", "dead")]), Err(TokenQueryError::Status));
        assert!(matches!(
            q(&[("sort", "x")]),
            Err(TokenQueryError::Unknown(_))
        ));
        assert_eq!(
            q(&[("status", "live"), ("status", "revoked")]),
            Err(TokenQueryError::Repeated("status"))
        );
    }
}

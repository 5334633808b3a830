//! The client's address, as every surface sees it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::state::AppState;

/// The client's IP address, for per-IP limits and the audit log: the connection's peer, or behind
/// a trusted proxy the address it forwards (`keyfob_domain::net::client_ip`); `unknown` when the
/// server was not started with connection info.
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(ClientIp("unknown".to_owned()));
        };
        let trusted = &state.config.trusted_proxies;
        if trusted.is_empty() {
            return Ok(ClientIp(peer.ip().to_canonical().to_string()));
        }
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let ip = keyfob_domain::net::client_ip(peer.ip(), &forwarded, trusted);
        Ok(ClientIp(ip.to_string()))
    }
}

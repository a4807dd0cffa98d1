//! The public types both adapters' clients expose, defined once so `wxsocket-tokio` and
//! `wxsocket-blocking` cannot drift apart (each re-exports them).

use crate::proxy::ProxyEnv;
use crate::tls::TlsRoots;
use std::net::SocketAddr;
use wxsocket_core::{SendError, SendFailure, SessionConfig};

/// Configuration of a client, task pool or wx socket: the session's policies and bounds,
/// and the certificate authorities `wss` trusts.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Config {
    /// Close-before-open policy, queue and buffer bounds, timeouts, keepalive, maximum
    /// message size, pool limit, reconnection.
    pub session: SessionConfig,
    /// Trusted CAs for `wss` (webpki roots by default, plus any custom ones).
    pub tls: TlsRoots,
    /// The proxy variables for connections whose `proxy` option is the default
    /// ([`wxsocket_core::ProxyOption::Environment`]). `None` (the default): the process
    /// environment, read once when the client is created.
    pub proxy_env: Option<ProxyEnv>,
}

impl Config {
    /// The defaults: [`SessionConfig::default`] and the webpki roots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the session configuration.
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Sets the trusted certificate authorities.
    pub fn tls(mut self, tls: TlsRoots) -> Self {
        self.tls = tls;
        self
    }

    /// Uses these proxy variables instead of the process environment
    /// ([`ProxyEnv::empty`]: ignore the environment).
    pub fn proxy_env(mut self, env: ProxyEnv) -> Self {
        self.proxy_env = Some(env);
        self
    }

    /// The proxy variables a client created now uses: [`Self::proxy_env`], or the process
    /// environment read at this call.
    pub fn resolve_proxy_env(&self) -> ProxyEnv {
        self.proxy_env
            .clone()
            .unwrap_or_else(ProxyEnv::from_process)
    }
}

/// Why a send that waits for its completion did not confirm a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailed {
    /// The send was refused at once (not connected, closing, queue or buffer full, too
    /// large); the message is in the error.
    #[error(transparent)]
    Refused(#[from] SendError),
    /// The message was accepted but will never be written (connection lost, replaced, …).
    #[error(transparent)]
    Failed(SendFailure),
}

/// A connection's TCP socket as the OS reports it, read back after the dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketInfo {
    /// The local address.
    pub local_addr: SocketAddr,
    /// The server's address (the proxy's, through a proxy).
    pub peer_addr: SocketAddr,
    /// Whether `TCP_NODELAY` is set (as the socket reports it).
    pub nodelay: bool,
    /// Whether the connection uses TLS.
    pub tls: bool,
    /// Whether the connection tunnels through an HTTP proxy (then `peer_addr` is the
    /// proxy's address).
    pub proxied: bool,
}

impl SocketInfo {
    /// What a driver read back from its socket.
    pub fn new(local_addr: SocketAddr, peer_addr: SocketAddr, nodelay: bool, tls: bool) -> Self {
        Self {
            local_addr,
            peer_addr,
            nodelay,
            tls,
            proxied: false,
        }
    }

    /// The same socket, marked as tunnelling through a proxy.
    pub fn through_proxy(mut self) -> Self {
        self.proxied = true;
        self
    }
}

//! TLS for `wss://`: rustls through tokio-rustls with the `tls` feature. Without it the
//! stream type has no values, so the connection code is the same in both builds and no TLS
//! path can run: `connect` refuses a `wss://` URL before any IO
//! ([`wxsocket_wire::check_request`]), and a dial that got here anyway fails naming the
//! feature.

use std::sync::Arc;
use tokio::net::TcpStream;
use wxsocket_core::{ConfigError, TransportError};
use wxsocket_wire::dial::DialPlan;
use wxsocket_wire::tls::TlsRoots;

#[cfg(feature = "tls")]
pub(crate) use rustls::ClientConfig;
#[cfg(feature = "tls")]
pub(crate) type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// The client configuration every `wss` dial of one client uses.
#[cfg(feature = "tls")]
pub(crate) fn client_config(roots: &TlsRoots) -> Result<Arc<ClientConfig>, ConfigError> {
    roots.client_config().map_err(|_| ConfigError {
        field: "tls",
        problem: "a custom root certificate was rejected by rustls",
    })
}

/// The TLS handshake with `host` over `tcp`.
#[cfg(feature = "tls")]
pub(crate) async fn connect(
    config: &Arc<ClientConfig>,
    plan: &DialPlan,
    tcp: TcpStream,
) -> Result<TlsStream, TransportError> {
    tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(plan.tls_server_name()?, tcp)
        .await
        .map_err(|e| wxsocket_wire::dial::handshake_failed(&e, "tls"))
}

#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub(crate) struct ClientConfig;

/// A TLS stream; has no values without the `tls` feature.
#[cfg(not(feature = "tls"))]
pub(crate) enum TlsStream {}

#[cfg(not(feature = "tls"))]
pub(crate) fn client_config(_roots: &TlsRoots) -> Result<Arc<ClientConfig>, ConfigError> {
    Ok(Arc::new(ClientConfig))
}

#[cfg(not(feature = "tls"))]
pub(crate) async fn connect(
    _config: &Arc<ClientConfig>,
    _plan: &DialPlan,
    _tcp: TcpStream,
) -> Result<TlsStream, TransportError> {
    Err(TransportError::new(
        wxsocket_core::TransportErrorKind::Tls,
        "tls: wss:// needs the `tls` feature of wxsocket-tokio, which this build left out",
    ))
}

#[cfg(not(feature = "tls"))]
mod never {
    use super::TlsStream;
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    impl AsyncRead for TlsStream {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match *self {}
        }
    }

    impl AsyncWrite for TlsStream {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            match *self {}
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            match *self {}
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            match *self {}
        }
    }
}

//! What this build can dial: `wss://` needs the `tls` feature, a permessage-deflate offer the
//! `deflate` feature. The adapters check every connect with these before any IO, so a
//! request the build cannot honour fails at once with an error naming the feature.

use wxsocket_core::{ConnectError, HandshakeRequest};

/// Refuses a validated request that needs a feature this build of `wxsocket-wire` lacks:
/// a `wss://` URL without `tls`, a permessage-deflate offer without `deflate`. Always `Ok`
/// with the default features.
///
/// ```
/// use wxsocket_core::ConnectOptions;
/// let request = ConnectOptions::new("wss://example.com/").validate().unwrap();
/// assert_eq!(wxsocket_wire::check_request(&request).is_ok(), cfg!(feature = "tls"));
/// ```
pub fn check_request(request: &HandshakeRequest) -> Result<(), ConnectError> {
    if request.is_tls() && !cfg!(feature = "tls") {
        return Err(ConnectError::Unsupported {
            option: "url",
            why: "wss:// needs the `tls` feature of wxsocket-tokio / wxsocket-blocking (wxsocket-wire), which this build left out",
        });
    }
    if request.per_message_deflate.is_some() && !cfg!(feature = "deflate") {
        return Err(ConnectError::Unsupported {
            option: "perMessageDeflate",
            why: "compression needs the `deflate` feature of wxsocket-tokio / wxsocket-blocking (wxsocket-wire), which this build left out",
        });
    }
    Ok(())
}

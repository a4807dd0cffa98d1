//! Both adapters re-export the same core and wire types, so a program moves between them by
//! adding or removing `.await` (and the types it names stay the same).

use std::any::TypeId;

macro_rules! same_types {
    ($($name:ident),* $(,)?) => {
        $(
            assert_eq!(
                TypeId::of::<wxsocket_tokio::$name>(),
                TypeId::of::<wxsocket_blocking::$name>(),
                stringify!($name)
            );
        )*
    };
}

#[test]
fn both_adapters_re_export_the_same_types() {
    same_types!(
        Acknowledgement,
        ProxyOption,
        Utf8Payload,
        CloseBeforeOpen,
        CloseError,
        ConfigError,
        ConnId,
        ConnectError,
        ConnectOptions,
        ConnectionError,
        DeflateOptions,
        DeflateParams,
        Event,
        Handshake,
        Keepalive,
        Message,
        OpenProfile,
        PingError,
        ReadyState,
        ReconnectPolicy,
        SendError,
        SendFailure,
        SendId,
        SessionConfig,
        TransportError,
        Backlog,
        Stats,
        Closed,
        Error,
        ErrorKind,
        TransportErrorKind,
        Config,
        SendFailed,
        SocketInfo,
        ProxyEnv,
        TlsRoots,
        Recording,
        Redaction,
        HeaderName,
    );
    assert_eq!(wxsocket_tokio::MAX_TIMER, wxsocket_blocking::MAX_TIMER);
}

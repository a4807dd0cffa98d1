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
        FailedSend,
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
        HeaderMap,
        HeaderValue,
        Bytes,
        StartError,
        ClientIdentity,
        PemFileError,
    );
    assert_eq!(
        TypeId::of::<wxsocket_tokio::CertificateDer<'static>>(),
        TypeId::of::<wxsocket_blocking::CertificateDer<'static>>(),
    );
    assert_eq!(
        TypeId::of::<wxsocket_tokio::PrivateKeyDer<'static>>(),
        TypeId::of::<wxsocket_blocking::PrivateKeyDer<'static>>(),
    );
    assert_eq!(wxsocket_tokio::MAX_TIMER, wxsocket_blocking::MAX_TIMER);
}

/// A custom root certificate rustls rejects is refused by `Client::new` in the same words in
/// both adapters (they differed).
#[test]
fn both_adapters_refuse_a_bad_root_certificate_alike() {
    let garbage = wxsocket_tokio::CertificateDer::from(b"not a certificate".to_vec());
    let roots = wxsocket_tokio::TlsRoots::default().with_ca(garbage);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tokio = runtime.block_on(async {
        wxsocket_tokio::Client::new(wxsocket_tokio::Config::new().tls(roots.clone()))
            .map(|_| ())
            .unwrap_err()
    });
    let blocking = wxsocket_blocking::Client::new(wxsocket_blocking::Config::new().tls(roots))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(tokio, blocking);
    assert_eq!(tokio.field(), Some("tls"));
}

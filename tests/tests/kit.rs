//! The published test kit's scenarios (`wxsocket-testkit`) on both adapters: they pass what
//! any other driver of the core must pass (the third driver, in `poll_loop.rs`, too).

/// `wxsocket-tokio`'s `Client`.
mod on_tokio {
    type Driver = wxsocket_tests::adapter::Kit<wxsocket_tests::adapter::TokioAdapter>;
    wxsocket_testkit::scenarios!(Driver);
}

/// `wxsocket-blocking`'s `Client`.
mod on_blocking {
    type Driver = wxsocket_tests::adapter::Kit<wxsocket_tests::adapter::BlockingAdapter>;
    wxsocket_testkit::scenarios!(Driver);
}

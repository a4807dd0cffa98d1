//! wxsocket over tokio (in progress).

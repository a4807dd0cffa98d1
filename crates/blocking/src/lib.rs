//! wxsocket over std threads (in progress).

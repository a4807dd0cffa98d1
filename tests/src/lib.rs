//! Shared helpers for the cross-adapter conformance suites.

//! wx

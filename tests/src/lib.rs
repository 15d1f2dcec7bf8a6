//! Shared helpers of the workspace-wide tests.

/// A minimal keep-alive HTTP/1.1 client for the REST server.
pub mod http;
/// A test KBS speaking the RCAR protocol over loopback, standing in for a Trustee KBS.
pub mod kbs;
/// The three services started as plain processes, as the bench and the stack tests run them.
pub mod stack;

//! Shared helpers of the workspace-wide tests.

/// A test KBS speaking the RCAR protocol over loopback, standing in for a Trustee KBS.
pub mod kbs;

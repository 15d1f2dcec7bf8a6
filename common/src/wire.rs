//! The generated wire API of the Attestation Agent and the Confidential Data Hub.
//!
//! One set of prost message types serves both transports: the ttrpc modules
//! own the messages, the gRPC modules add only tonic services around them.

/// Messages and ttrpc services, one module per protobuf package.
#[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
pub mod ttrpc {
    include!(concat!(env!("OUT_DIR"), "/ttrpc/_include.rs"));
}

/// tonic client and server modules over the messages of [`ttrpc`].
#[cfg(feature = "grpc")]
#[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
pub mod grpc {
    /// The `attestation_agent` package.
    pub mod attestation_agent {
        include!(concat!(env!("OUT_DIR"), "/grpc/attestation_agent.rs"));
    }
    /// The `api` package of the Confidential Data Hub.
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/grpc/api.rs"));
    }
}

pub use self::ttrpc::{api, attestation_agent};

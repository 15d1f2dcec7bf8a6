//! The error every request of the hub answers with, and its status code on each transport.

/// Why a request failed; each kind maps to one ttrpc/gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is malformed (bad URI, bad sealed secret).
    InvalidArgument,
    /// The resource does not exist.
    NotFound,
    /// The KBS refused to release the resource.
    PermissionDenied,
    /// A party the hub depends on (KBS, Attestation Agent) cannot be reached right now.
    Unavailable,
    /// This build does not offer the operation.
    Unimplemented,
    /// Anything else: a protocol violation or a local fault.
    Internal,
}

/// A failed request: its kind and a message naming the URI or input, never secret content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HubError {
    kind: ErrorKind,
    message: String,
}

impl HubError {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The ttrpc status of this error.
    pub fn to_ttrpc(&self) -> ttrpc::Error {
        let code = match self.kind {
            ErrorKind::InvalidArgument => ttrpc::Code::INVALID_ARGUMENT,
            ErrorKind::NotFound => ttrpc::Code::NOT_FOUND,
            ErrorKind::PermissionDenied => ttrpc::Code::PERMISSION_DENIED,
            ErrorKind::Unavailable => ttrpc::Code::UNAVAILABLE,
            ErrorKind::Unimplemented => ttrpc::Code::UNIMPLEMENTED,
            ErrorKind::Internal => ttrpc::Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, self.message.clone()))
    }

    /// The gRPC status of this error.
    #[cfg(feature = "grpc")]
    pub fn to_grpc(&self) -> tonic::Status {
        let code = match self.kind {
            ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Unimplemented => tonic::Code::Unimplemented,
            ErrorKind::Internal => tonic::Code::Internal,
        };
        tonic::Status::new(code, self.message.clone())
    }
}

//! A minimal ttrpc client that writes request frames and reads response frames on one unix
//! connection, one call at a time: what the service costs per call, without the ttrpc crate's
//! client tasks and channels on the bench's side.

use std::path::Path;

use anyhow::{bail, Context, Result};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use ttrpc::proto::{
    MessageHeader, Request, Response, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX,
    MESSAGE_TYPE_RESPONSE,
};

/// A unary call, encoded once as the ttrpc `Request` it sends every time.
pub struct EncodedCall {
    /// `service/method`, for errors.
    name: String,
    request: Vec<u8>,
}

impl EncodedCall {
    /// `service`/`method` with an encoded request message.
    pub fn new(service: &str, method: &str, payload: Vec<u8>) -> Self {
        let request = Request {
            service: service.to_owned(),
            method: method.to_owned(),
            payload,
            timeout_nano: 0,
            metadata: Vec::new(),
        };
        Self {
            name: format!("{service}/{method}"),
            request: request.encode_to_vec(),
        }
    }
}

/// One ttrpc connection that sends unary calls in sequence.
pub struct FrameConnection {
    stream: UnixStream,
    next_stream_id: u32,
    frame: Vec<u8>,
}

impl FrameConnection {
    /// Connects to the ttrpc socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path)
            .await
            .with_context(|| format!("failed to connect to {}", path.display()))?;
        Ok(Self {
            stream,
            // Clients use odd stream ids.
            next_stream_id: 1,
            frame: Vec::with_capacity(256),
        })
    }

    /// Sends `call` and returns the encoded answer.
    pub async fn call(&mut self, call: &EncodedCall) -> Result<Vec<u8>> {
        let stream_id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(2);

        let length = u32::try_from(call.request.len())?;
        self.frame.clear();
        self.frame
            .extend_from_slice(&Vec::from(MessageHeader::new_request(stream_id, length)));
        self.frame.extend_from_slice(&call.request);
        self.stream.write_all(&self.frame).await?;

        let mut header = [0u8; MESSAGE_HEADER_LENGTH];
        self.stream.read_exact(&mut header).await?;
        let header = MessageHeader::from(header);
        if header.type_ != MESSAGE_TYPE_RESPONSE || header.stream_id != stream_id {
            bail!(
                "unexpected frame: type {} on stream {} (sent stream {stream_id})",
                header.type_,
                header.stream_id
            );
        }
        let length = usize::try_from(header.length)?;
        if length > MESSAGE_LENGTH_MAX {
            bail!("response of {length} bytes is over the ttrpc limit");
        }
        self.frame.resize(length, 0);
        self.stream.read_exact(&mut self.frame).await?;

        let response = Response::decode(self.frame.as_slice())?;
        if let Some(status) = response.status.filter(|status| status.code != 0) {
            bail!("{} failed: {} {}", call.name, status.code, status.message);
        }
        Ok(response.payload)
    }
}

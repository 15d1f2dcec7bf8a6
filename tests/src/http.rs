//! A minimal keep-alive HTTP/1.1 client over loopback TCP, enough to drive the REST server.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive connection to `127.0.0.1:<port>`.
pub struct HttpConnection {
    stream: BufReader<TcpStream>,
    port: u16,
    open: bool,
}

impl HttpConnection {
    /// Connects to the loopback port.
    pub async fn connect(port: u16) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("failed to connect to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            port,
            open: true,
        })
    }

    /// Whether the server kept the connection open after the last response.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Sends `GET path`, reads the whole response and returns its status code.
    pub async fn get(&mut self, path: &str) -> Result<u16> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .with_context(|| format!("failed to send GET {path}"))?;
        self.read_response()
            .await
            .with_context(|| format!("failed to read the response to GET {path}"))
    }

    async fn read_response(&mut self) -> Result<u16> {
        let status_line = self.line().await?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("malformed status line {status_line:?}"))?;

        let mut length = None;
        let mut chunked = false;
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                bail!("malformed header line {line:?}");
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .with_context(|| format!("malformed content-length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                self.open = !value.eq_ignore_ascii_case("close");
            }
        }

        match (chunked, length) {
            (true, _) => self.skip_chunked().await?,
            (false, Some(length)) => self.skip(length).await?,
            (false, None) => bail!("response has neither content-length nor chunked encoding"),
        }
        Ok(status)
    }

    /// One header line without its CRLF; the end of the stream is an error.
    async fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            self.open = false;
            bail!("connection closed mid-response");
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    async fn skip(&mut self, length: usize) -> Result<()> {
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await?;
        Ok(())
    }

    async fn skip_chunked(&mut self) -> Result<()> {
        loop {
            let size_line = self.line().await?;
            let size = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .with_context(|| format!("malformed chunk size {size_line:?}"))?;
            if size == 0 {
                // Trailers, if any, end with an empty line.
                while !self.line().await?.is_empty() {}
                return Ok(());
            }
            self.skip(size + 2).await?;
        }
    }
}

//! What the relay needs of a client connection, for plain TCP and for TLS alike.
//!
//! The relay waits for a client connection to become readable without holding a buffer (an
//! idle connection holds none), then reads what is there without waiting. On plain TCP that
//! is the socket's readiness. Behind TLS, the socket's readiness is not enough: rustls may
//! already hold decrypted bytes (a record larger than the last read, or several records read
//! at once) while the socket has nothing new, so [`ClientStream::ready`] is immediate then.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection the relay serves.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Resolves once a read may return bytes, or the end of the stream, without waiting.
    /// A read may still find nothing (a partial TLS record); the relay then waits again.
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Whether the connection settled on HTTP/2 by ALPN, which the relay does not speak.
    fn chose_h2(&self) -> bool {
        false
    }
}

impl ClientStream for TcpStream {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }
}

impl ClientStream for TlsStream<TcpStream> {
    fn chose_h2(&self) -> bool {
        self.get_ref().1.alpn_protocol() == Some(b"h2")
    }

    async fn ready(&self) -> io::Result<()> {
        let (tcp, session) = self.get_ref();
        // rustls stops wanting to read while it holds plaintext not yet taken, or once the
        // peer's close_notify came: either way a read answers at once.
        if !session.wants_read() {
            return Ok(());
        }
        tcp.readable().await
    }
}

//! The internal binary protocol (L1): TCP, length-prefixed postcard frames, a versioned tagged message set,
//! request ids so many requests share one connection per peer pair, per-request timeouts, reconnect with backoff,
//! and a mutual challenge-response handshake on the cluster secret, optionally inside mutual TLS.

pub mod handshake;
pub mod message;
pub mod transport;

pub use handshake::{ClusterKey, HandshakeError};
pub use message::{Answer, Frame, Message, PeerInfo, RemoteError, RemoteErrorKind, answer};
pub use transport::{Handler, Identity, PeerPool};

/// Errors of a call to a peer.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No response before the deadline.
    #[error("peer {addr} did not answer in time")]
    Timeout {
        /// Peer address.
        addr: String,
    },
    /// The request was never sent: no connection, a failed or timed-out handshake, or a connection that closed
    /// first. The peer cannot have acted on it.
    #[error("peer {addr} is unreachable: {reason}")]
    Unreachable {
        /// Peer address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection closed before the response.
    #[error("connection to peer {addr} closed")]
    Closed {
        /// Peer address.
        addr: String,
    },
    /// The handshake failed.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// Peer address.
        addr: String,
        /// Why.
        source: HandshakeError,
    },
    /// The TLS handshake with a peer failed (a certificate the CA did not sign, a name that does not match, or one
    /// side without peer TLS).
    #[error("TLS with peer {addr} failed: {reason}")]
    Tls {
        /// Peer address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer answered that it could not serve the request (not a replica, storage stopped, ...).
    #[error("peer {addr} refused: {refusal}")]
    Refused {
        /// Peer address.
        addr: String,
        /// Its classification and words.
        refusal: RemoteError,
    },
    /// A frame could not be read or decoded.
    #[error("bad frame: {reason}")]
    Frame {
        /// Why.
        reason: String,
    },
}

// Real sockets: under the `sim` feature the transport speaks turmoil's.
#[cfg(all(test, not(feature = "sim")))]
mod tests;

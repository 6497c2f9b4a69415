//! The peer handshake as pure functions: mutual challenge-response over the cluster key, so a stranger can neither
//! join nor write, and the secret never crosses the wire.
//!
//! ```text
//! client → server  Hello     { version, cluster, node_id, nonce_c }
//! server → client  Challenge { version, node_id, nonce_s, proof_s = MAC("server" ‖ nonce_c ‖ nonce_s ‖ ids) }
//! client → server  Proof     { proof_c = MAC("client" ‖ nonce_s ‖ nonce_c ‖ ids) }
//! server → client  Welcome | Refused { reason }
//! ```
//! The MAC key is HMAC-SHA256(secret, "dynamo-kv cluster " ‖ cluster name). Without a secret (open dev mode) the key
//! is derived from the empty secret: anyone who knows the cluster name can join.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::message::PROTOCOL_VERSION;

/// Handshake frames.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Handshake {
    /// First frame of the connecting side.
    Hello {
        /// Its protocol version.
        version: u16,
        /// The cluster it wants to join.
        cluster: String,
        /// Its node id.
        node_id: String,
        /// Its replication factor N: nodes must agree on it to agree on replica sets.
        replicas: u8,
        /// Fresh random nonce.
        nonce: [u8; 16],
    },
    /// The accepting side's proof and challenge.
    Challenge {
        /// Its protocol version.
        version: u16,
        /// Its node id.
        node_id: String,
        /// Fresh random nonce.
        nonce: [u8; 16],
        /// MAC proving it holds the cluster key.
        proof: [u8; 32],
    },
    /// The connecting side's proof.
    Proof {
        /// MAC proving it holds the cluster key.
        proof: [u8; 32],
    },
    /// Accepted.
    Welcome,
    /// Refused, with the reason (also logged by the refusing side).
    Refused {
        /// Why.
        reason: String,
    },
}

/// The key both sides MAC with.
#[derive(Clone)]
pub struct ClusterKey {
    key: [u8; 32],
    /// Cluster name.
    pub cluster: String,
    /// Whether a secret was configured (false: open dev mode).
    pub authenticated: bool,
    /// The replication factor N both sides must share.
    pub replicas: u8,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({}, authenticated: {})", self.cluster, self.authenticated)
    }
}

impl ClusterKey {
    /// Derives the key of `cluster` from `secret` (None: open dev mode); peers must also agree on N.
    pub fn derive(cluster: &str, secret: Option<&str>) -> ClusterKey {
        Self::derive_with_replicas(cluster, secret, 3)
    }

    /// As [`derive`](Self::derive), for a cluster whose replication factor is `replicas`.
    pub fn derive_with_replicas(cluster: &str, secret: Option<&str>, replicas: u8) -> ClusterKey {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.unwrap_or("").as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"dynamo-kv cluster ");
        mac.update(cluster.as_bytes());
        ClusterKey {
            key: mac.finalize().into_bytes().into(),
            cluster: cluster.to_string(),
            authenticated: secret.is_some(),
            replicas,
        }
    }

    /// A 32-byte subkey for another purpose (e.g. context tokens), so one secret serves both.
    pub fn subkey(&self, purpose: &str) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(b"subkey ");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    fn proof(&self, role: &[u8], first: &[u8; 16], second: &[u8; 16], client: &str, server: &str) -> [u8; 32] {
        let mut mac = self.mac();
        for part in [role, first, second, client.as_bytes(), &[0], server.as_bytes()] {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn verify(
        &self,
        role: &[u8],
        first: &[u8; 16],
        second: &[u8; 16],
        client: &str,
        server: &str,
        proof: &[u8; 32],
    ) -> bool {
        let mut mac = self.mac();
        for part in [role, first, second, client.as_bytes(), &[0], server.as_bytes()] {
            mac.update(part);
        }
        mac.verify_slice(proof).is_ok()
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// The peers speak different protocol versions.
    #[error("protocol version mismatch: ours {ours}, theirs {theirs}")]
    Version {
        /// Our version.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The peer belongs to another cluster.
    #[error("cluster name mismatch: ours '{ours}', theirs '{theirs}'")]
    Cluster {
        /// Ours.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// The peer's proof is wrong: it does not hold our cluster secret (or one side has none).
    #[error("peer '{peer}' failed authentication: cluster secret mismatch")]
    Authentication {
        /// Peer's claimed id.
        peer: String,
    },
    /// Both sides must use the same N.
    #[error("replication factor mismatch: ours {ours}, theirs {theirs}")]
    Replicas {
        /// Our N.
        ours: u8,
        /// Theirs.
        theirs: u8,
    },
    /// The peer is this node itself (an address that loops back, e.g. an advertised 0.0.0.0).
    #[error("connected to itself ('{id}'): check the advertised peer addresses")]
    SelfConnection {
        /// Our id.
        id: String,
    },
    /// The peer is not the node we meant to reach.
    #[error("expected node '{expected}' but '{found}' answered")]
    WrongPeer {
        /// The member we meant.
        expected: String,
        /// Who answered.
        found: String,
    },
    /// The peer refused us.
    #[error("refused by peer: {reason}")]
    Refused {
        /// Its reason.
        reason: String,
    },
    /// A frame out of order.
    #[error("unexpected handshake frame")]
    Unexpected,
}

/// The connecting side.
pub struct ClientHandshake {
    node_id: String,
    nonce: [u8; 16],
    peer: Option<String>,
}

impl ClientHandshake {
    /// Starts a handshake; returns the state and the Hello to send.
    pub fn start(key: &ClusterKey, node_id: &str, nonce: [u8; 16]) -> (Self, Handshake) {
        let hello = Handshake::Hello {
            version: PROTOCOL_VERSION,
            cluster: key.cluster.clone(),
            node_id: node_id.to_string(),
            replicas: key.replicas,
            nonce,
        };
        (Self { node_id: node_id.to_string(), nonce, peer: None }, hello)
    }

    /// Checks the server's Challenge; returns the Proof to send.
    pub fn on_challenge(&mut self, key: &ClusterKey, frame: Handshake) -> Result<Handshake, HandshakeError> {
        match frame {
            Handshake::Challenge { version, node_id, nonce, proof } => {
                if version != PROTOCOL_VERSION {
                    return Err(HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: version });
                }
                if node_id == self.node_id {
                    return Err(HandshakeError::SelfConnection { id: node_id });
                }
                if !key.verify(b"server", &self.nonce, &nonce, &self.node_id, &node_id, &proof) {
                    return Err(HandshakeError::Authentication { peer: node_id });
                }
                let proof = key.proof(b"client", &nonce, &self.nonce, &self.node_id, &node_id);
                self.peer = Some(node_id);
                Ok(Handshake::Proof { proof })
            }
            Handshake::Refused { reason } => Err(HandshakeError::Refused { reason }),
            _ => Err(HandshakeError::Unexpected),
        }
    }

    /// Checks the final answer; returns the server's node id.
    pub fn on_result(self, frame: Handshake) -> Result<String, HandshakeError> {
        match frame {
            Handshake::Welcome => self.peer.ok_or(HandshakeError::Unexpected),
            Handshake::Refused { reason } => Err(HandshakeError::Refused { reason }),
            _ => Err(HandshakeError::Unexpected),
        }
    }
}

/// The accepting side.
pub struct ServerHandshake {
    node_id: String,
    nonce: [u8; 16],
    client: Option<(String, [u8; 16])>,
}

impl ServerHandshake {
    /// Prepares to accept with a fresh nonce.
    pub fn new(node_id: &str, nonce: [u8; 16]) -> Self {
        Self { node_id: node_id.to_string(), nonce, client: None }
    }

    /// Checks the Hello; returns the Challenge to send. On an error, send `Refused` with its text.
    pub fn on_hello(&mut self, key: &ClusterKey, frame: Handshake) -> Result<Handshake, HandshakeError> {
        match frame {
            Handshake::Hello { version, cluster, node_id, replicas, nonce } => {
                if version != PROTOCOL_VERSION {
                    return Err(HandshakeError::Version { ours: PROTOCOL_VERSION, theirs: version });
                }
                if node_id == self.node_id {
                    return Err(HandshakeError::SelfConnection { id: node_id });
                }
                if replicas != key.replicas {
                    return Err(HandshakeError::Replicas { ours: key.replicas, theirs: replicas });
                }
                if cluster != key.cluster {
                    return Err(HandshakeError::Cluster { ours: key.cluster.clone(), theirs: cluster });
                }
                let proof = key.proof(b"server", &nonce, &self.nonce, &node_id, &self.node_id);
                self.client = Some((node_id, nonce));
                Ok(Handshake::Challenge {
                    version: PROTOCOL_VERSION,
                    node_id: self.node_id.clone(),
                    nonce: self.nonce,
                    proof,
                })
            }
            _ => Err(HandshakeError::Unexpected),
        }
    }

    /// Checks the client's Proof; returns the client's node id and the Welcome to send. On an error, send
    /// `Refused` with its text.
    pub fn on_proof(self, key: &ClusterKey, frame: Handshake) -> Result<(String, Handshake), HandshakeError> {
        let Some((client, client_nonce)) = self.client else {
            return Err(HandshakeError::Unexpected);
        };
        match frame {
            Handshake::Proof { proof }
                if key.verify(b"client", &self.nonce, &client_nonce, &client, &self.node_id, &proof) =>
            {
                Ok((client, Handshake::Welcome))
            }
            Handshake::Proof { .. } => Err(HandshakeError::Authentication { peer: client }),
            _ => Err(HandshakeError::Unexpected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(client_key: &ClusterKey, server_key: &ClusterKey) -> Result<(String, String), HandshakeError> {
        let (mut c, hello) = ClientHandshake::start(client_key, "a", [1; 16]);
        let mut s = ServerHandshake::new("b", [2; 16]);
        let challenge = s.on_hello(server_key, hello)?;
        let proof = c.on_challenge(client_key, challenge)?;
        let (client_id, welcome) = s.on_proof(server_key, proof)?;
        let server_id = c.on_result(welcome)?;
        Ok((client_id, server_id))
    }

    #[test]
    fn same_secret_succeeds_both_ways() {
        let k = ClusterKey::derive("prod", Some("s3cret"));
        assert_eq!(run(&k, &k).unwrap(), ("a".to_string(), "b".to_string()));
        let open = ClusterKey::derive("dev", None);
        assert!(run(&open, &open).is_ok());
    }

    #[test]
    fn strangers_are_refused() {
        let k = ClusterKey::derive("prod", Some("s3cret"));
        let wrong = ClusterKey::derive("prod", Some("guess"));
        // The client detects a server without the secret, and the server a client without it.
        assert!(matches!(run(&wrong, &k), Err(HandshakeError::Authentication { .. })));
        assert!(matches!(run(&k, &wrong), Err(HandshakeError::Authentication { .. })));
        let open = ClusterKey::derive("prod", None);
        assert!(matches!(run(&open, &k), Err(HandshakeError::Authentication { .. })));
        let other = ClusterKey::derive("staging", Some("s3cret"));
        assert!(matches!(run(&other, &k), Err(HandshakeError::Cluster { .. })));
        let n5 = ClusterKey::derive_with_replicas("prod", Some("s3cret"), 5);
        assert!(matches!(run(&n5, &k), Err(HandshakeError::Replicas { ours: 3, theirs: 5 })));
    }

    #[test]
    fn a_node_never_accepts_itself() {
        let k = ClusterKey::derive("prod", Some("s3cret"));
        let (_, hello) = ClientHandshake::start(&k, "b", [1; 16]);
        let mut s = ServerHandshake::new("b", [2; 16]);
        assert!(matches!(s.on_hello(&k, hello), Err(HandshakeError::SelfConnection { .. })));
    }

    #[test]
    fn a_replayed_proof_fails_with_a_new_nonce() {
        let k = ClusterKey::derive("prod", Some("s3cret"));
        let (mut c, hello) = ClientHandshake::start(&k, "a", [1; 16]);
        let mut s1 = ServerHandshake::new("b", [2; 16]);
        let proof = c.on_challenge(&k, s1.on_hello(&k, hello.clone()).unwrap()).unwrap();
        // An eavesdropper replays the proof against a new server nonce.
        let mut s2 = ServerHandshake::new("b", [3; 16]);
        s2.on_hello(&k, hello).unwrap();
        assert!(s2.on_proof(&k, proof).is_err());
    }
}

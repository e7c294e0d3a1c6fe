//! `sntrup761x25519-sha512` (and its older name with `@openssh.com`; patch 0009):
//! Streamlined NTRU Prime 761 combined with X25519, as OpenSSH's
//! `kexsntrup761x25519.c` and draft-ietf-sshm-ntruprime-ssh define it.
//!
//! The client sends its sntrup761 public key (1158 bytes) followed by its
//! X25519 public key (32); the server answers with the sntrup761
//! ciphertext (1039 bytes) followed by its X25519 public key. The shared
//! secret K is SHA-512 over the sntrup761 shared key followed by the raw
//! X25519 shared point, encoded as an SSH string (not an mpint) in the
//! exchange hash and the key derivation, both SHA-512. The lattice
//! arithmetic is the `sntrup761` crate's (pure Rust, checked by its
//! authors against the reference known-answer tests); nothing of it is
//! written here.

use byteorder::{BigEndian, ByteOrder};
use curve25519_dalek::montgomery::MontgomeryPoint;
use log::debug;
use sha2::{Digest, Sha512};
use ssh_encoding::{Encode, Writer};

use super::{compute_keys, KexAlgorithm, KexAlgorithmImplementor, KexType, SharedSecret};
use crate::mac;
use crate::session::Exchange;
use crate::{cipher, msg, CryptoVec, Error};

const X25519_SIZE: usize = 32;
/// What the client sends: its sntrup761 public key, then its X25519 key.
const CLIENT_INIT_SIZE: usize = sntrup761::PUBLIC_KEY_SIZE + X25519_SIZE;
/// What the server answers: the sntrup761 ciphertext, then its X25519 key.
const SERVER_REPLY_SIZE: usize = sntrup761::CIPHERTEXT_SIZE + X25519_SIZE;

pub struct Sntrup761X25519KexType {}

impl KexType for Sntrup761X25519KexType {
    fn make(&self) -> KexAlgorithm {
        Sntrup761X25519Kex::default().into()
    }
}

#[doc(hidden)]
#[derive(Default)]
pub struct Sntrup761X25519Kex {
    /// The client's secrets between its init and the server's reply.
    sntrup_secret: Option<Box<sntrup761::DecapsulationKey>>,
    x25519_secret: Option<[u8; 32]>,
    /// SHA-512(sntrup761 key || X25519 point), once both are known.
    k: Option<[u8; 64]>,
}

impl std::fmt::Debug for Sntrup761X25519Kex {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Sntrup761X25519Kex {{ [secrets hidden] }}")
    }
}

/// K from the two shared secrets; `None` when the X25519 point is all
/// zeros (a low-order point from the peer), which OpenSSH refuses too.
fn combine(sntrup: &sntrup761::SharedSecret, x25519: &MontgomeryPoint) -> Option<[u8; 64]> {
    if x25519.0 == [0u8; 32] {
        return None;
    }
    let mut hasher = Sha512::new();
    hasher.update(sntrup.as_ref());
    hasher.update(x25519.0);
    Some(hasher.finalize().into())
}

/// The peer's X25519 key from the last 32 bytes of `bytes`.
fn x25519_point(bytes: &[u8]) -> Result<MontgomeryPoint, Error> {
    let key: [u8; 32] = bytes.try_into().map_err(|_| Error::Kex)?;
    Ok(MontgomeryPoint(key))
}

impl KexAlgorithmImplementor for Sntrup761X25519Kex {
    fn skip_exchange(&self) -> bool {
        false
    }

    fn server_dh(&mut self, exchange: &mut Exchange, payload: &[u8]) -> Result<(), Error> {
        debug!("server_dh (sntrup761x25519)");
        if payload.first() != Some(&msg::KEX_HYBRID_INIT) {
            return Err(Error::Inconsistent);
        }
        let len_bytes = payload.get(1..5).ok_or(Error::Inconsistent)?;
        let len = BigEndian::read_u32(len_bytes) as usize;
        let c_init = payload.get(5..).and_then(|rest| rest.get(..len));
        let c_init = c_init.ok_or(Error::Inconsistent)?;
        if c_init.len() != CLIENT_INIT_SIZE {
            debug!("sntrup761x25519: client init of {} bytes", c_init.len());
            return Err(Error::Kex);
        }
        let (c_sntrup, c_x25519) = c_init.split_at(sntrup761::PUBLIC_KEY_SIZE);
        let c_sntrup = sntrup761::EncapsulationKey::try_from(c_sntrup).map_err(|_| Error::Kex)?;
        let c_x25519 = x25519_point(c_x25519)?;

        let (ciphertext, k_pq) = c_sntrup.encapsulate(rand::rng());
        let s_secret = rand::random::<[u8; 32]>();
        let s_x25519 = MontgomeryPoint::mul_base_clamped(s_secret);
        let k_cl = c_x25519.mul_clamped(s_secret);
        let Some(k) = combine(&k_pq, &k_cl) else {
            debug!("client sent a low-order curve25519 pubkey");
            return Err(Error::Kex);
        };

        exchange.server_ephemeral.clear();
        exchange
            .server_ephemeral
            .extend_from_slice(ciphertext.as_ref());
        exchange.server_ephemeral.extend_from_slice(&s_x25519.0);
        self.k = Some(k);
        Ok(())
    }

    fn client_dh(
        &mut self,
        client_ephemeral: &mut Vec<u8>,
        writer: &mut impl Writer,
    ) -> Result<(), Error> {
        let (public, secret) = sntrup761::generate_key(rand::rng());
        let x25519_secret = rand::random::<[u8; 32]>();
        let x25519_public = MontgomeryPoint::mul_base_clamped(x25519_secret);

        client_ephemeral.clear();
        client_ephemeral.extend_from_slice(public.as_ref());
        client_ephemeral.extend_from_slice(&x25519_public.0);

        msg::KEX_HYBRID_INIT.encode(writer)?;
        client_ephemeral.as_slice().encode(writer)?;

        self.sntrup_secret = Some(Box::new(secret));
        self.x25519_secret = Some(x25519_secret);
        Ok(())
    }

    fn compute_shared_secret(&mut self, remote: &[u8]) -> Result<(), Error> {
        if remote.len() != SERVER_REPLY_SIZE {
            return Err(Error::Kex);
        }
        let (s_ciphertext, s_x25519) = remote.split_at(sntrup761::CIPHERTEXT_SIZE);
        let s_ciphertext =
            sntrup761::Ciphertext::try_from(s_ciphertext).map_err(|_| Error::Kex)?;
        let s_x25519 = x25519_point(s_x25519)?;

        let secret = self.sntrup_secret.take().ok_or(Error::KexInit)?;
        let k_pq = secret.decapsulate(&s_ciphertext);
        let x25519_secret = self.x25519_secret.take().ok_or(Error::KexInit)?;
        let k_cl = s_x25519.mul_clamped(x25519_secret);
        let Some(k) = combine(&k_pq, &k_cl) else {
            debug!("server sent a low-order curve25519 pubkey");
            return Err(Error::Kex);
        };
        self.k = Some(k);
        Ok(())
    }

    fn shared_secret_bytes(&self) -> Option<&[u8]> {
        self.k.as_ref().map(|k| k.as_slice())
    }

    fn compute_exchange_hash(
        &self,
        key: &[u8],
        exchange: &Exchange,
        buffer: &mut CryptoVec,
    ) -> Result<Vec<u8>, Error> {
        let k = self.k.as_ref().ok_or(Error::KexInit)?;
        buffer.clear();
        exchange.client_id.encode(buffer)?;
        exchange.server_id.encode(buffer)?;
        exchange.client_kex_init.encode(buffer)?;
        exchange.server_kex_init.encode(buffer)?;
        buffer.extend(key);
        exchange.client_ephemeral.encode(buffer)?;
        exchange.server_ephemeral.encode(buffer)?;
        k.as_slice().encode(buffer)?;
        Ok(Sha512::digest(&buffer[..]).to_vec())
    }

    fn compute_keys(
        &self,
        session_id: &[u8],
        exchange_hash: &[u8],
        cipher: cipher::Name,
        remote_to_local_mac: mac::Name,
        local_to_remote_mac: mac::Name,
        is_server: bool,
    ) -> Result<super::cipher::CipherPair, Error> {
        let k = self.k.as_ref().ok_or(Error::KexInit)?;
        let shared_secret = SharedSecret::from_string(k)?;
        compute_keys::<Sha512>(
            Some(&shared_secret),
            session_id,
            exchange_hash,
            cipher,
            remote_to_local_mac,
            local_to_remote_mac,
            is_server,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A client init message: the byte, then the ephemeral as a string.
    fn init_message(ephemeral: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        msg::KEX_HYBRID_INIT.encode(&mut out).unwrap();
        ephemeral.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn both_sides_agree_on_k_and_the_exchange_hash() {
        let mut client = Sntrup761X25519Kex::default();
        let mut server = Sntrup761X25519Kex::default();
        let mut client_ephemeral = Vec::new();
        let mut init = Vec::new();
        client.client_dh(&mut client_ephemeral, &mut init).unwrap();
        assert_eq!(client_ephemeral.len(), CLIENT_INIT_SIZE);
        assert_eq!(init, init_message(&client_ephemeral));

        let mut exchange = Exchange {
            client_id: b"SSH-2.0-OpenSSH_9.2p1".to_vec(),
            server_id: b"SSH-2.0-gatehouse".to_vec(),
            client_ephemeral: client_ephemeral.clone(),
            ..Exchange::default()
        };
        server.server_dh(&mut exchange, &init).unwrap();
        assert_eq!(exchange.server_ephemeral.len(), SERVER_REPLY_SIZE);
        client
            .compute_shared_secret(&exchange.server_ephemeral)
            .unwrap();
        assert_eq!(client.k, server.k);

        let mut buffer = CryptoVec::new();
        let h_client = client
            .compute_exchange_hash(b"host key", &exchange, &mut buffer)
            .unwrap();
        let h_server = server
            .compute_exchange_hash(b"host key", &exchange, &mut buffer)
            .unwrap();
        assert_eq!(h_client, h_server);
        assert_eq!(h_client.len(), 64, "SHA-512");
    }

    /// Known answer: K for fixed secrets, computed outside this code
    /// (Python: `cryptography`'s X25519 public key of the scalar 9…9, and
    /// `hashlib.sha512` of seven…seven followed by it); and H rebuilt by
    /// hand from the definition, K hashed as a string.
    #[test]
    fn k_is_sha512_of_the_two_shared_secrets_and_h_hashes_k_as_a_string() {
        let sntrup = sntrup761::SharedSecret::from([7u8; 32]);
        let point = MontgomeryPoint::mul_base_clamped([9u8; 32]);
        assert_eq!(
            hex(&point.0),
            "57db4b359f23ae5e146e4e2512056704722506348c150c14753d0c933d04d421"
        );
        let k = combine(&sntrup, &point).unwrap();
        assert_eq!(
            hex(&k),
            "9897cb5d1b786f8ce6138fe6d02e29bba07fcd05a8b727eb0bab074c5a072816\
             7fdc0c85c118f43562a8bf5d2d01d90bb11d0277ad2ad9036209fd245df200c9"
        );

        let kex = Sntrup761X25519Kex {
            k: Some(k),
            ..Default::default()
        };
        let exchange = Exchange {
            client_id: b"C".to_vec(),
            server_id: b"S".to_vec(),
            client_ephemeral: vec![1, 2],
            server_ephemeral: vec![3],
            ..Exchange::default()
        };
        let mut buffer = CryptoVec::new();
        let h = kex
            .compute_exchange_hash(b"KS", &exchange, &mut buffer)
            .unwrap();
        // string C, string S, string I_C (empty), string I_S (empty),
        // K_S as given, string Q_C, string Q_S, string K (64 bytes).
        let mut manual = Vec::new();
        for part in [&b"C"[..], b"S", b"", b""] {
            manual.extend_from_slice(&(part.len() as u32).to_be_bytes());
            manual.extend_from_slice(part);
        }
        manual.extend_from_slice(b"KS");
        for part in [&[1u8, 2][..], &[3u8][..], &k[..]] {
            manual.extend_from_slice(&(part.len() as u32).to_be_bytes());
            manual.extend_from_slice(part);
        }
        assert_eq!(h, Sha512::digest(&manual).to_vec());
    }

    #[test]
    fn wrong_lengths_and_low_order_points_are_refused() {
        let mut server = Sntrup761X25519Kex::default();
        let mut exchange = Exchange::default();
        for len in [0, 32, CLIENT_INIT_SIZE - 1, CLIENT_INIT_SIZE + 1, 100_000] {
            let init = init_message(&vec![0u8; len]);
            assert!(server.server_dh(&mut exchange, &init).is_err(), "{len}");
        }
        // A length field longer than the message.
        let mut short = init_message(&vec![0u8; CLIENT_INIT_SIZE]);
        short.truncate(100);
        assert!(server.server_dh(&mut exchange, &short).is_err());
        // Only the message byte, or another message.
        assert!(server.server_dh(&mut exchange, &[30]).is_err());
        assert!(server.server_dh(&mut exchange, &[31, 0, 0, 0, 0]).is_err());
        // A real sntrup761 key with an all-zero X25519 key: the shared
        // point is zero, refused as OpenSSH refuses it.
        let (public, _) = sntrup761::generate_key(rand::rng());
        let mut ephemeral = public.as_ref().to_vec();
        ephemeral.extend_from_slice(&[0u8; 32]);
        assert!(server
            .server_dh(&mut exchange, &init_message(&ephemeral))
            .is_err());
        assert!(server.k.is_none());

        let mut client = Sntrup761X25519Kex::default();
        let (mut eph, mut init) = (Vec::new(), Vec::new());
        client.client_dh(&mut eph, &mut init).unwrap();
        assert!(client.compute_shared_secret(&[0u8; 100]).is_err());
    }
}

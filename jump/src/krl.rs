//! Revoked certificates and keys (`jump.user_ca.revoked_keys_file`): an
//! OpenSSH key revocation list (`ssh-keygen -k`, PROTOCOL.krl) or a plain
//! list of public keys, as sshd's `RevokedKeys` takes. No crate parses
//! KRLs, so this is the smallest reader that covers what `ssh-keygen -k`
//! writes: certificates by serial (lists, ranges, bitmaps) and key id, per
//! CA or for any CA; keys explicitly or by SHA-1/SHA-256 fingerprint. The
//! signature section is not checked (the file comes from configuration
//! management, as the config does).
//!
//! Owns parsing and the membership test; must not read files on a runtime
//! thread (the caller reads them on a blocking one).

use std::collections::HashSet;

use russh::keys::ssh_key::{Certificate, PublicKey, public::KeyData};

/// "SSHKRL\n\0".
const MAGIC: &[u8; 8] = b"SSHKRL\n\0";

/// Why a revocation file was not taken.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct KrlError(String);

fn bad(why: impl Into<String>) -> KrlError {
    KrlError(why.into())
}

/// What is revoked.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    certs: Vec<CertSection>,
    keys: HashSet<Vec<u8>>,
    sha1: HashSet<Vec<u8>>,
    sha256: HashSet<Vec<u8>>,
}

/// Certificates revoked for one CA (`None`: for any CA).
#[derive(Debug, Default)]
struct CertSection {
    ca: Option<Vec<u8>>,
    serials: Vec<(u64, u64)>,
    bitmaps: Vec<(u64, Vec<u8>)>,
    key_ids: HashSet<String>,
}

impl CertSection {
    fn serial(&self, serial: u64) -> bool {
        self.serials
            .iter()
            .any(|&(lo, hi)| lo <= serial && serial <= hi)
            || self
                .bitmaps
                .iter()
                .any(|(offset, bits)| bit(bits, *offset, serial))
    }
}

/// Is `serial` set in the big-endian bitmap `bits` whose bit 0 is `offset`?
fn bit(bits: &[u8], offset: u64, serial: u64) -> bool {
    let Some(index) = serial.checked_sub(offset) else {
        return false;
    };
    let Ok(byte) = usize::try_from(index / 8) else {
        return false;
    };
    byte < bits.len()
        && bits
            .get(bits.len() - 1 - byte)
            .is_some_and(|b| b & (1 << (index % 8)) != 0)
}

/// The key's wire encoding (the "key blob" KRLs list and hash).
fn blob(key: &KeyData) -> Vec<u8> {
    PublicKey::new(key.clone(), "")
        .to_bytes()
        .unwrap_or_default()
}

impl Revocations {
    /// Parse a KRL, or else a list of public keys (one per line, `#`
    /// comments).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Revocations, KrlError> {
        if bytes.starts_with(MAGIC) {
            return parse_krl(bytes);
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| bad("neither a KRL nor a list of public keys"))?;
        let mut revoked = Revocations::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = PublicKey::from_openssh(line)
                .map_err(|e| bad(format!("line {}: not a public key: {e}", n + 1)))?;
            revoked.keys.insert(blob(key.key_data()));
        }
        Ok(revoked)
    }

    /// Is this key revoked (explicitly or by fingerprint)?
    pub(crate) fn key(&self, key: &KeyData) -> bool {
        use sha1::Digest as _;
        let blob = blob(key);
        self.keys.contains(&blob)
            || self.sha1.contains(sha1::Sha1::digest(&blob).as_slice())
            || self
                .sha256
                .contains(<sha2::Sha256 as sha2::Digest>::digest(&blob).as_slice())
    }

    /// Why `cert` is revoked, if it is: its serial or key id under its CA,
    /// its key, or the CA key itself.
    pub(crate) fn certificate(&self, cert: &Certificate) -> Option<&'static str> {
        if self.key(cert.signature_key()) {
            return Some("its CA key is revoked");
        }
        if self.key(cert.public_key()) {
            return Some("its key is revoked");
        }
        let ca = blob(cert.signature_key());
        for section in &self.certs {
            if section.ca.as_ref().is_some_and(|c| *c != ca) {
                continue;
            }
            if cert.serial() != 0 && section.serial(cert.serial()) {
                return Some("its serial is revoked");
            }
            if section.key_ids.contains(cert.key_id()) {
                return Some("its key id is revoked");
            }
        }
        None
    }
}

/// A reader of SSH wire types over a byte slice; every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KrlError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or_else(|| bad("truncated"))?;
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, KrlError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, KrlError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, KrlError> {
        let b = self.take(8)?;
        let mut a = [0_u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self) -> Result<&'a [u8], KrlError> {
        let n = usize::try_from(self.u32()?).map_err(|_| bad("length"))?;
        self.take(n)
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_krl(bytes: &[u8]) -> Result<Revocations, KrlError> {
    let mut r = Reader(bytes);
    r.take(MAGIC.len())?;
    let format = r.u32()?;
    if format != 1 {
        return Err(bad(format!("KRL format {format}: only 1 is known")));
    }
    let _krl_version = r.u64()?;
    let _generated = r.u64()?;
    let _flags = r.u64()?;
    let _reserved = r.string()?;
    let _comment = r.string()?;
    let mut revoked = Revocations::default();
    while !r.done() {
        let kind = r.u8()?;
        let mut data = Reader(r.string()?);
        match kind {
            1 => revoked.certs.push(cert_section(&mut data)?),
            2 => {
                while !data.done() {
                    revoked.keys.insert(data.string()?.to_vec());
                }
            }
            3 | 5 => {
                let set = if kind == 3 {
                    &mut revoked.sha1
                } else {
                    &mut revoked.sha256
                };
                while !data.done() {
                    set.insert(data.string()?.to_vec());
                }
            }
            // The signature sections end what is covered.
            4 => break,
            other => return Err(bad(format!("unknown KRL section {other}"))),
        }
    }
    Ok(revoked)
}

fn cert_section(data: &mut Reader<'_>) -> Result<CertSection, KrlError> {
    let ca = data.string()?;
    let _reserved = data.string()?;
    let mut section = CertSection {
        ca: (!ca.is_empty()).then(|| ca.to_vec()),
        ..CertSection::default()
    };
    while !data.done() {
        let kind = data.u8()?;
        let mut sub = Reader(data.string()?);
        match kind {
            0x20 => {
                while !sub.done() {
                    let s = sub.u64()?;
                    section.serials.push((s, s));
                }
            }
            0x21 => {
                let (lo, hi) = (sub.u64()?, sub.u64()?);
                section.serials.push((lo, hi));
            }
            0x22 => {
                let offset = sub.u64()?;
                let bits = sub.string()?;
                section.bitmaps.push((offset, bits.to_vec()));
            }
            0x23 => {
                while !sub.done() {
                    let id = String::from_utf8_lossy(sub.string()?).into_owned();
                    section.key_ids.insert(id);
                }
            }
            other => return Err(bad(format!("unknown KRL certificate section {other:#x}"))),
        }
    }
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_count_from_their_offset_lowest_bit_last_byte() {
        // 0x01 0x05: bits 0, 2 and 8 set.
        let bits = [0x01, 0x05];
        assert!(bit(&bits, 100, 100));
        assert!(!bit(&bits, 100, 101));
        assert!(bit(&bits, 100, 102));
        assert!(bit(&bits, 100, 108));
        assert!(!bit(&bits, 100, 99));
        assert!(!bit(&bits, 100, 116));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bytes in [
            &b"SSHKRL\n\0"[..],
            b"SSHKRL\n\0\0\0\0\x02",
            b"SSHKRL\n\0\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\xff\xff\xff\xff",
            b"\xff\xfe",
            b"ssh-ed25519 notbase64",
        ] {
            assert!(Revocations::parse(bytes).is_err(), "{bytes:?}");
        }
        assert!(Revocations::parse(b"# nothing revoked\n").is_ok());
    }
}

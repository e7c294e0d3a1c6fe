//! OpenSSH user certificates (`jump.user_ca`): whether one may log `user`
//! in, as a plain decision with `now` and the peer passed in. russh has
//! checked the certificate's own signature, its validity window and the
//! client's signature with its key; everything the certificate says is
//! judged here, and it must say exactly what a jump host can honour.
//!
//! Owns the rules; must not read files (`krl` parses, the server reads).

use std::net::IpAddr;

use gatehouse_config::UserCa;
use ipnet::IpNet;
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, certificate::CertType};

use crate::krl::Revocations;

/// What the audit log and the session keep of an accepted certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertInfo {
    /// The signing CA's SHA-256 fingerprint.
    pub ca: String,
    pub key_id: String,
    pub serial: u64,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
}

/// Why a certificate does not log this user in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CertRefusal {
    #[error("a host certificate, not a user one")]
    NotUser,
    #[error("signed by a CA not in jump.user_ca")]
    UnknownCa,
    #[error("CA signature algorithm {0} not allowed (as OpenSSH 8.2+: no SHA-1)")]
    WeakCaSignature(String),
    #[error("no principals (a certificate for anyone is refused)")]
    NoPrincipals,
    #[error("the user is not among its principals")]
    WrongPrincipal,
    #[error("not valid yet")]
    NotYetValid,
    #[error("expired")]
    Expired,
    #[error("revoked: {0}")]
    Revoked(&'static str),
    #[error("critical option force-command (no commands run here)")]
    ForceCommand,
    #[error("source-address {0} does not include the client's address")]
    SourceAddress(String),
    #[error("source-address {0:?} is not a list of addresses/CIDRs")]
    BadSourceAddress(String),
    #[error("critical option verify-required on a key that is no security key")]
    VerifyWithoutSecurityKey,
    #[error("unknown critical option {0:?}")]
    UnknownOption(String),
    #[error("no permit-port-forwarding extension")]
    NoPortForwarding,
}

/// Check `cert` for `user` from `peer` at unix time `now`.
pub(crate) fn check(
    cert: &Certificate,
    user: &str,
    ca: &UserCa,
    revoked: &Revocations,
    peer: IpAddr,
    now: u64,
) -> Result<CertInfo, CertRefusal> {
    if cert.cert_type() != CertType::User {
        return Err(CertRefusal::NotUser);
    }
    if !ca.keys.iter().any(|k| k.key_data() == cert.signature_key()) {
        return Err(CertRefusal::UnknownCa);
    }
    let signed_with = cert.signature().algorithm();
    if !ca_signature_allowed(&signed_with) {
        return Err(CertRefusal::WeakCaSignature(
            signed_with.as_str().to_owned(),
        ));
    }
    let principals = cert.valid_principals();
    if principals.is_empty() {
        return Err(CertRefusal::NoPrincipals);
    }
    if !principals.iter().any(|p| p == user) {
        return Err(CertRefusal::WrongPrincipal);
    }
    // No clock-skew allowance: the CA picks the window (ssh-keygen's
    // default backdates valid-after by a minute), and russh applies it
    // strictly before this runs.
    if now < cert.valid_after() {
        return Err(CertRefusal::NotYetValid);
    }
    if now >= cert.valid_before() {
        return Err(CertRefusal::Expired);
    }
    if let Some(why) = revoked.certificate(cert) {
        return Err(CertRefusal::Revoked(why));
    }
    for (name, value) in cert.critical_options().iter() {
        match name.as_str() {
            "force-command" => return Err(CertRefusal::ForceCommand),
            "source-address" => source_address(value, peer)?,
            // Judged with the signature's flags (`fido`); meaningless, so
            // refused, on a key that is no security key (sshd ignores it
            // there: a CA asking for verification would get none).
            "verify-required"
                if gatehouse_config::is_security_key(cert.public_key().algorithm()) => {}
            "verify-required" => return Err(CertRefusal::VerifyWithoutSecurityKey),
            other => return Err(CertRefusal::UnknownOption(other.to_owned())),
        }
    }
    if !cert.extensions().contains_key("permit-port-forwarding") {
        return Err(CertRefusal::NoPortForwarding);
    }
    Ok(CertInfo {
        ca: cert
            .signature_key()
            .fingerprint(HashAlg::Sha256)
            .to_string(),
        key_id: cert.key_id().to_owned(),
        serial: cert.serial(),
        principals: principals.to_vec(),
        valid_after: cert.valid_after(),
        valid_before: cert.valid_before(),
    })
}

/// The algorithms a CA may sign a certificate with: OpenSSH's default
/// `CASignatureAlgorithms` since 8.2, which dropped `ssh-rsa` (SHA-1:
/// chosen-prefix collisions, "SHA-1 is a Shambles", 2020). russh checks
/// the CA's signature but not its algorithm, and ssh-key verifies SHA-1
/// RSA signatures.
fn ca_signature_allowed(algorithm: &Algorithm) -> bool {
    match algorithm {
        Algorithm::Ed25519
        | Algorithm::Ecdsa { .. }
        | Algorithm::SkEd25519
        | Algorithm::SkEcdsaSha2NistP256 => true,
        Algorithm::Rsa { hash } => matches!(hash, Some(HashAlg::Sha256 | HashAlg::Sha512)),
        _ => false,
    }
}

/// `source-address`: a comma-separated list of addresses and CIDRs.
fn source_address(value: &str, peer: IpAddr) -> Result<(), CertRefusal> {
    let peer = peer.to_canonical();
    let mut any = false;
    for item in value.split(',') {
        let item = item.trim();
        let net = item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| CertRefusal::BadSourceAddress(value.to_owned()))?;
        any |= net.contains(&peer);
    }
    if any {
        Ok(())
    } else {
        Err(CertRefusal::SourceAddress(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use russh::keys::EcdsaCurve;

    use super::*;

    #[test]
    fn cas_sign_as_openssh_accepts_no_sha1() {
        for ok in [
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::SkEd25519,
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
        ] {
            assert!(ca_signature_allowed(&ok), "{ok:?}");
        }
        assert!(
            !ca_signature_allowed(&Algorithm::Rsa { hash: None }),
            "ssh-rsa"
        );
        assert!(!ca_signature_allowed(&Algorithm::Dsa));
        assert_eq!(
            CertRefusal::WeakCaSignature(Algorithm::Rsa { hash: None }.as_str().into()).to_string(),
            "CA signature algorithm ssh-rsa not allowed (as OpenSSH 8.2+: no SHA-1)"
        );
    }

    #[test]
    fn source_addresses_are_lists_of_addresses_and_networks() {
        let peer: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(source_address("10.0.0.0/8", peer), Ok(()));
        assert_eq!(source_address("192.0.2.1,10.1.2.3", peer), Ok(()));
        assert_eq!(
            source_address("192.0.2.0/24", peer),
            Err(CertRefusal::SourceAddress("192.0.2.0/24".into()))
        );
        assert!(matches!(
            source_address("nonsense", peer),
            Err(CertRefusal::BadSourceAddress(_))
        ));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert_eq!(source_address("10.1.2.3", mapped), Ok(()));
    }
}

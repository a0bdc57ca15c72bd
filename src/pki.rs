//! Test PKI: a throw-away CA, TLS certificates issued by it, signing key
//! pairs, and the SPKI SHA-256 fingerprint that pins a certificate to a party
//! (DESIGN §1, §8.1).
//!
//! Used by `samgate init`, `samgate demo` and the test harness. Every TLS key
//! is ECDSA P-256; signing keys for consents, audit tree heads, deliveries
//! and user tokens are Ed25519 (or P-256 for ES256 tests). Private key PEMs
//! are held in [`Zeroizing`] strings and never appear in `Debug` output.

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// How long issued certificates (and the CA) are valid: about two years.
const VALIDITY: Duration = Duration::days(730);
/// Backdating of `notBefore`, so that clocks a little behind still accept
/// a certificate issued a moment ago.
const BACKDATE: Duration = Duration::days(1);

/// Errors from generating or parsing certificates and keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// rcgen refused to generate a key or certificate, or to parse a PEM.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A generated private key could not be re-encoded as PKCS#8 v1.
    #[error("the private key could not be encoded as PKCS#8 v1")]
    Pkcs8,
    /// A DER certificate could not be parsed as X.509.
    #[error("certificate is not valid X.509 DER")]
    ParseCertificate,
    /// A PEM text held no certificate.
    #[error("PEM text holds no certificate")]
    NoCertificate,
    /// A subject alternative name is neither an IP literal nor a DNS name.
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),
}

/// A test certificate authority, entry point for generating a new one.
#[derive(Debug, Clone, Copy)]
pub struct TestCa;

impl TestCa {
    /// Generates a new self-signed CA with an ECDSA P-256 key, valid from a
    /// day ago for about two years.
    pub fn generate(common_name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            cert,
            key,
        })
    }
}

/// A loaded certificate authority that can issue server and client
/// certificates.
pub struct Ca {
    /// The CA certificate as rcgen holds it, used as the issuer of new
    /// certificates (its subject and key identifier).
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate as generated or loaded (what relying parties trust).
    cert_pem: String,
    cert_der: Vec<u8>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Reloads a CA from its certificate PEM and PKCS#8 private key PEM
    /// (the `pki/ca.pem` and `pki/ca.key` that `samgate init` writes).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = first_certificate_der(cert_pem)?;
        // The parsed parameters keep the subject and the subject key
        // identifier, which is all the issuer of new certificates needs; the
        // re-signed certificate itself is not handed out.
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert,
            key,
            cert_pem: cert_pem.to_owned(),
            cert_der,
        })
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    /// Issues a TLS server certificate (EKU serverAuth) for `common_name`
    /// with the given subject alternative names: IP literals become IP SANs,
    /// anything else a DNS name.
    pub fn issue_server(&self, common_name: &str, sans: &[&str]) -> Result<IssuedCert, PkiError> {
        let sans = sans.iter().map(|s| san(s)).collect::<Result<Vec<_>, _>>()?;
        self.issue(common_name, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// Issues a TLS client certificate (EKU clientAuth) for `common_name`.
    pub fn issue_client(&self, common_name: &str) -> Result<IssuedCert, PkiError> {
        self.issue(common_name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
    ) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

/// A certificate issued by a [`Ca`] together with its private key.
pub struct IssuedCert {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: Zeroizing<String>,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate in DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The SPKI SHA-256 pin of this certificate (see [`spki_sha256_hex`]).
    pub fn spki_sha256_hex(&self) -> Result<String, PkiError> {
        spki_sha256_hex(&self.cert_der)
    }
}

/// A signing key pair in PEM: the private key as PKCS#8, the public key as
/// SubjectPublicKeyInfo.
pub struct SigningKeyPem {
    /// Private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub pkcs8_pem: Zeroizing<String>,
    /// Public key, SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub spki_pem: String,
}

impl fmt::Debug for SigningKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyPem")
            .field("spki_pem", &self.spki_pem)
            .finish_non_exhaustive()
    }
}

/// Generates an Ed25519 signing key pair (consent issuers, audit, delivery,
/// user-token issuers).
pub fn generate_ed25519() -> Result<SigningKeyPem, PkiError> {
    signing_key(&PKCS_ED25519)
}

/// Generates an ECDSA P-256 signing key pair (ES256).
pub fn generate_p256() -> Result<SigningKeyPem, PkiError> {
    signing_key(&PKCS_ECDSA_P256_SHA256)
}

fn signing_key(alg: &'static rcgen::SignatureAlgorithm) -> Result<SigningKeyPem, PkiError> {
    let key = KeyPair::generate_for(alg)?;
    let pkcs8_pem = if alg == &PKCS_ED25519 {
        Zeroizing::new(pkcs8_v1_pem(&Zeroizing::new(key.serialize_der()))?)
    } else {
        Zeroizing::new(key.serialize_pem())
    };
    Ok(SigningKeyPem {
        pkcs8_pem,
        spki_pem: key.public_key_pem(),
    })
}

/// Re-encodes a PKCS#8 private key as version 1 (RFC 5208; RFC 8410 for
/// Ed25519) without the optional public key, as PEM. ring (and rcgen on
/// ring) generates Ed25519 keys as PKCS#8 v2 (RFC 5958, public key
/// included), which OpenSSL 3.0, Java and Python's `cryptography` refuse
/// (DESIGN §10 "Keys others must read"); the public key is derived from the
/// private one by every reader, so nothing is lost.
pub fn pkcs8_v1_pem(der: &[u8]) -> Result<String, PkiError> {
    use pkcs8::der::Encode;
    let mut info = pkcs8::PrivateKeyInfo::try_from(der).map_err(|_| PkiError::Pkcs8)?;
    info.public_key = None;
    let v1 = Zeroizing::new(info.to_der().map_err(|_| PkiError::Pkcs8)?);
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    Ok(pem::encode_config(
        &pem::Pem::new("PRIVATE KEY", v1.to_vec()),
        config,
    ))
}

/// The lowercase hex SHA-256 of a certificate's DER SubjectPublicKeyInfo:
/// the value a party's `certificate_sha256` pins (DESIGN §1, §8.1).
pub fn spki_sha256_hex(cert_der: &[u8]) -> Result<String, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|_| PkiError::ParseCertificate)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    Ok(hex::encode(digest.as_ref()))
}

/// The DER of the first certificate in a PEM text.
pub fn first_certificate_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .ok_or(PkiError::NoCertificate)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn san(name: &str) -> Result<SanType, PkiError> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => name
            .try_into()
            .map(SanType::DnsName)
            .map_err(|_| PkiError::InvalidSan(name.to_owned())),
    }
}

fn set_validity(params: &mut CertificateParams) {
    // Certificates are generated for a new deployment or a test run, so the
    // wall clock at generation time is the right anchor.
    #[expect(
        clippy::disallowed_methods,
        reason = "certificates are generated against the real time (see the comment)"
    )]
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + VALIDITY;
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::*;

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        parse_x509_certificate(der).unwrap().1
    }

    /// Checks the ECDSA P-256 signature of `cert` against the CA's key.
    fn signed_by(cert: &X509Certificate<'_>, ca: &X509Certificate<'_>) -> bool {
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
        UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_ASN1,
            ca.public_key().subject_public_key.data.as_ref(),
        )
        .verify(
            cert.tbs_certificate.as_ref(),
            cert.signature_value.data.as_ref(),
        )
        .is_ok()
    }

    fn roots(ca: &Ca) -> std::sync::Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().to_vec().into()).unwrap();
        std::sync::Arc::new(roots)
    }

    fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
        std::sync::Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn server_certificate_chains_to_the_ca_with_server_auth_and_sans() {
        let ca = TestCa::generate("samgate test CA").unwrap();
        let server = ca
            .issue_server("gateway", &["localhost", "127.0.0.1"])
            .unwrap();
        let ca_cert = parse(ca.cert_der());
        let cert = parse(server.cert_der());

        assert!(ca_cert.is_ca());
        assert_eq!(cert.issuer(), ca_cert.subject());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "gateway"
        );
        assert!(signed_by(&cert, &ca_cert));
        assert!(cert.validity().is_valid());

        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth);
        assert!(!eku.client_auth);

        let sans = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert!(sans.contains(&GeneralName::DNSName("localhost")));
        assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
    }

    #[test]
    fn client_certificate_has_client_auth_only() {
        let ca = TestCa::generate("samgate test CA").unwrap();
        let client = ca.issue_client("af").unwrap();
        let cert = parse(client.cert_der());
        assert!(signed_by(&cert, &parse(ca.cert_der())));
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth);
        assert!(!eku.server_auth);
        assert!(!cert.is_ca());
    }

    #[test]
    fn reloaded_ca_issues_certificates_that_chain_to_the_original() {
        let ca = TestCa::generate("samgate test CA").unwrap();
        let reloaded = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(reloaded.cert_der(), ca.cert_der());
        let client = reloaded.issue_client("fk").unwrap();
        let ca_cert = parse(ca.cert_der());
        let cert = parse(client.cert_der());
        assert_eq!(cert.issuer(), ca_cert.subject());
        assert!(signed_by(&cert, &ca_cert));
    }

    #[test]
    fn rustls_accepts_the_server_certificate_for_localhost_and_loopback() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        let ca = TestCa::generate("samgate test CA").unwrap();
        let server = ca
            .issue_server("gateway", &["localhost", "127.0.0.1"])
            .unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&ca), provider())
                .build()
                .unwrap();
        let ee = server.cert_der().to_vec().into();
        for name in ["localhost", "127.0.0.1"] {
            let name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&ee, &[], &name, &[], UnixTime::now())
                .unwrap();
        }
        let other = ServerName::try_from("example.org").unwrap();
        assert!(verifier
            .verify_server_cert(&ee, &[], &other, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn rustls_accepts_the_client_certificate_and_refuses_a_server_one() {
        use rustls::pki_types::UnixTime;
        let ca = TestCa::generate("samgate test CA").unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&ca), provider())
                .build()
                .unwrap();
        let client = ca.issue_client("af").unwrap();
        verifier
            .verify_client_cert(&client.cert_der().to_vec().into(), &[], UnixTime::now())
            .unwrap();
        // A serverAuth-only certificate must not authenticate a client.
        let server = ca.issue_server("af", &["localhost"]).unwrap();
        assert!(verifier
            .verify_client_cert(&server.cert_der().to_vec().into(), &[], UnixTime::now())
            .is_err());
        // Nor a certificate from another CA.
        let stranger = TestCa::generate("other")
            .unwrap()
            .issue_client("af")
            .unwrap();
        assert!(verifier
            .verify_client_cert(&stranger.cert_der().to_vec().into(), &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn fingerprint_is_stable_and_equal_for_der_and_reparsed_pem() {
        let ca = TestCa::generate("samgate test CA").unwrap();
        let client = ca.issue_client("fk").unwrap();
        let pin = spki_sha256_hex(client.cert_der()).unwrap();
        assert_eq!(pin.len(), 64);
        assert!(pin.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        assert_eq!(spki_sha256_hex(client.cert_der()).unwrap(), pin);
        let der = first_certificate_der(client.cert_pem()).unwrap();
        assert_eq!(spki_sha256_hex(&der).unwrap(), pin);
        assert_eq!(client.spki_sha256_hex().unwrap(), pin);

        // The pin is the hash of the public key, so it matches the key's SPKI.
        let key = KeyPair::from_pem(client.key_pem()).unwrap();
        let expected = ring::digest::digest(&ring::digest::SHA256, &key.public_key_der());
        assert_eq!(pin, hex::encode(expected.as_ref()));

        let other = ca.issue_client("fk").unwrap();
        assert_ne!(other.spki_sha256_hex().unwrap(), pin);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            spki_sha256_hex(b"not a certificate"),
            Err(PkiError::ParseCertificate)
        ));
        assert!(matches!(
            first_certificate_der("nothing here"),
            Err(PkiError::NoCertificate)
        ));
    }

    #[test]
    fn ed25519_key_pair_signs_and_verifies_with_ring() {
        use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
        let pair = generate_ed25519().unwrap();
        assert!(pair.pkcs8_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(pair.spki_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let der = x509_parser::pem::parse_x509_pem(pair.pkcs8_pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let signer = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap();
        let sig = signer.sign(b"tree head");
        UnparsedPublicKey::new(&ED25519, signer.public_key().as_ref())
            .verify(b"tree head", sig.as_ref())
            .unwrap();
        assert!(!format!("{pair:?}").contains("PRIVATE"));
    }

    #[test]
    fn p256_key_pair_is_pkcs8_and_spki() {
        let pair = generate_p256().unwrap();
        let key = KeyPair::from_pem(&pair.pkcs8_pem).unwrap();
        assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
        assert_eq!(key.public_key_pem(), pair.spki_pem);
    }

    #[test]
    fn debug_output_holds_no_private_key() {
        let ca = TestCa::generate("samgate test CA").unwrap();
        let client = ca.issue_client("af").unwrap();
        assert!(!format!("{ca:?}{client:?}").contains("PRIVATE"));
    }

    #[test]
    fn invalid_san_is_refused() {
        let ca = TestCa::generate("samgate test CA").unwrap();
        assert!(matches!(
            ca.issue_server("x", &["bad\u{e9}name"]),
            Err(PkiError::InvalidSan(_))
        ));
    }
}

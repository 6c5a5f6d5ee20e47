//! The cluster's key material, generated per test: one CA that signs the API server's and the
//! webhook server's serving certificates and every client certificate (the API server trusts it
//! as `--client-ca-file`, the webhook configurations carry it as `caBundle`), and the
//! service-account signing key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, both PEM.
pub struct Pair {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A throwaway CA that issues the test cluster's certificates.
pub struct Ca {
    /// The CA certificate, trusted by everything in the test.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn params(sans: &[&str], cn: &str) -> CertificateParams {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("certificate parameters");
    p.distinguished_name.push(DnType::CommonName, cn);
    // Tolerate clock skew between the test and the processes it starts.
    p.not_before = now - Duration::from_secs(3600);
    p.not_after = now + Duration::from_secs(24 * 3600);
    p
}

fn new_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate a key")
}

impl Ca {
    /// A new CA.
    pub fn new() -> Self {
        let key = new_key();
        let mut ca = params(&[], "milo-webhook envtest CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = ca.self_signed(&key).expect("self-sign the CA");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(ca, key),
        }
    }

    /// A serving certificate for 127.0.0.1 and localhost (the IP SAN is what the API server
    /// checks when it calls a webhook by `https://127.0.0.1:<port>`).
    pub fn serving(&self, cn: &str) -> Pair {
        let key = new_key();
        let mut p = params(&["127.0.0.1", "localhost"], cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(&key, &self.issuer)
            .expect("sign a serving cert");
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client certificate: the API server authenticates it as user `cn` in group `group`.
    pub fn client(&self, cn: &str, group: &str) -> Pair {
        let key = new_key();
        let mut p = params(&[], cn);
        p.distinguished_name
            .push(DnType::OrganizationName, group.to_owned());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer).expect("sign a client cert");
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A service-account signing key: (private key as PKCS#8 PEM, public key PEM).
pub fn service_account_key() -> (String, String) {
    let key = new_key();
    (key.serialize_pem(), key.public_key_pem())
}

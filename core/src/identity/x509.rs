//! What weft reads out of X.509 certificates: SPIFFE identities, serials and validity.
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::spiffe::Identity;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CertificateParseError {
    #[error("not a DER X.509 certificate: {0}")]
    Der(String),
    #[error("unreadable subjectAltName extension: {0}")]
    SubjectAltName(String),
    #[error("the certificate carries no SPIFFE identity (no spiffe:// URI SAN)")]
    NoIdentity,
    #[error("the certificate carries several SPIFFE identities ({0}); weft expects one")]
    SeveralIdentities(String),
}

/// A certificate serial number, shown as lower-case hex.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CertificateSerial(Vec<u8>);

impl CertificateSerial {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for CertificateSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertificateSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateSerial({self})")
    }
}

/// The facts about one certificate that weft acts on.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    /// Every `spiffe://` URI SAN that parses as a Kubernetes SPIFFE id.
    pub identities: Vec<Identity>,
    pub serial: CertificateSerial,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// DER SubjectPublicKeyInfo, to match a certificate with its key.
    pub public_key_info: Vec<u8>,
    pub is_ca: bool,
}

impl CertificateInfo {
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, CertificateParseError> {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| CertificateParseError::Der(e.to_string()))?;
        let identities = uri_sans(&cert)?
            .into_iter()
            .filter_map(|uri| uri.parse::<Identity>().ok())
            .collect();
        let validity = cert.validity();
        Ok(Self {
            identities,
            serial: CertificateSerial::from_bytes(cert.raw_serial()),
            not_before: to_system_time(validity.not_before.timestamp()),
            not_after: to_system_time(validity.not_after.timestamp()),
            public_key_info: cert.public_key().raw.to_vec(),
            is_ca: cert.is_ca(),
        })
    }

    /// The one SPIFFE identity of a workload certificate.
    pub fn single_identity(&self) -> Result<&Identity, CertificateParseError> {
        match self.identities.as_slice() {
            [] => Err(CertificateParseError::NoIdentity),
            [one] => Ok(one),
            many => Err(CertificateParseError::SeveralIdentities(
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }
}

fn uri_sans(cert: &X509Certificate<'_>) -> Result<Vec<String>, CertificateParseError> {
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| CertificateParseError::SubjectAltName(e.to_string()))?
    else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect())
}

fn to_system_time(unix_seconds: i64) -> SystemTime {
    match u64::try_from(unix_seconds) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        // Certificates from before 1970 exist only in tests of parsers; treat as the epoch.
        Err(_) => UNIX_EPOCH,
    }
}

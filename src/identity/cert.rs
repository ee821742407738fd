//! Who a client certificate names. rustls has already verified the chain to
//! `client_tls.client_ca`, the validity period and the client-auth usage; this reads the
//! identity: the SPIFFE ID (an X.509 SVID carries exactly one `spiffe://` URI SAN and is not a
//! CA, per the SPIFFE X.509-SVID spec) or else the subject CN.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertIdentity {
    /// Set only when the leaf is not a CA and has exactly one `spiffe://` URI SAN.
    pub spiffe_id: Option<String>,
    pub subject_cn: Option<String>,
}

impl CertIdentity {
    /// What the audit names as the proof.
    pub fn subject(&self) -> String {
        match (&self.spiffe_id, &self.subject_cn) {
            (Some(id), _) => id.clone(),
            (None, Some(cn)) => format!("cn={cn}"),
            (None, None) => "-".into(),
        }
    }
}

/// The identity in a DER certificate; `None` when it does not parse (rustls parsed it, so
/// this does not happen for a certificate it accepted).
pub fn identity_of(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) if u.starts_with("spiffe://") => Some(*u),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let spiffe_id = match uris.as_slice() {
        [one] if !is_ca => Some(one.to_string()),
        _ => None,
    };
    let subject_cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
    Some(CertIdentity { spiffe_id, subject_cn })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: Vec<rcgen::SanType>, cn: &str, ca: bool) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(u: &str) -> rcgen::SanType {
        rcgen::SanType::URI(rcgen::string::Ia5String::try_from(u).unwrap())
    }

    #[test]
    fn one_spiffe_uri_on_a_leaf_is_its_id() {
        let id = identity_of(&cert(vec![uri("spiffe://prod.example/ns/shop/sa/billing")], "billing", false)).unwrap();
        assert_eq!(id.spiffe_id.as_deref(), Some("spiffe://prod.example/ns/shop/sa/billing"));
        assert_eq!(id.subject_cn.as_deref(), Some("billing"));
        assert_eq!(id.subject(), "spiffe://prod.example/ns/shop/sa/billing");
    }

    #[test]
    fn two_spiffe_uris_or_a_ca_name_no_spiffe_id() {
        let two = identity_of(&cert(vec![uri("spiffe://a/x"), uri("spiffe://a/y")], "x", false)).unwrap();
        assert_eq!(two.spiffe_id, None);
        let ca = identity_of(&cert(vec![uri("spiffe://a/x")], "x", true)).unwrap();
        assert_eq!(ca.spiffe_id, None);
        let plain = identity_of(&cert(vec![uri("https://a/x")], "reports", false)).unwrap();
        assert_eq!((plain.spiffe_id, plain.subject_cn.as_deref()), (None, Some("reports")));
        assert!(identity_of(b"not a certificate").is_none());
    }
}

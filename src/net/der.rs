//! The few facts leasegate reads from a DER certificate itself, with a minimal TLV walk: the
//! signature algorithm (for `tls-server-end-point`), the subject public key (to check a
//! handshake signature without a full parse) and whether it is X.509 v1.
//!
//! Why not webpki for these: webpki parses only X.509 v3, and real servers carry v1
//! certificates (`openssl x509 -req` without extensions, the MySQL manual's recipe).

/// A certificate's `tbsCertificate` fields, in order.
struct Tbs<'a> {
    /// `[0] EXPLICIT Version`, absent in v1.
    version: Option<&'a [u8]>,
    /// `subjectPublicKeyInfo`'s value (the inside of its SEQUENCE).
    spki: &'a [u8],
}

fn tbs(cert: &[u8]) -> Option<Tbs<'_>> {
    let (outer, _) = tlv(cert, 0x30)?;
    let (mut fields, _) = tlv(outer, 0x30)?;
    let version = match tlv(fields, 0xa0) {
        Some((v, rest)) => {
            fields = rest;
            Some(v)
        }
        None => None,
    };
    // serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
    let (_, rest) = tlv(fields, 0x02)?;
    let (_, rest) = tlv(rest, 0x30)?;
    let (_, rest) = tlv(rest, 0x30)?;
    let (_, rest) = tlv(rest, 0x30)?;
    let (_, rest) = tlv(rest, 0x30)?;
    let (spki, _) = tlv(rest, 0x30)?;
    Some(Tbs { version, spki })
}

/// True for a well-formed certificate without a version field (X.509 v1).
pub fn is_v1(cert: &[u8]) -> bool {
    tbs(cert).is_some_and(|t| t.version.is_none())
}

/// The subject public key: (the AlgorithmIdentifier's value, the key bits), the two inputs a
/// `SignatureVerificationAlgorithm` is matched and checked with.
pub fn subject_public_key(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let spki = tbs(cert)?.spki;
    let (algorithm, rest) = tlv(spki, 0x30)?;
    let (bits, _) = tlv(rest, 0x03)?;
    // A key is a whole number of bytes: the unused-bits count must be 0.
    match bits.split_first()? {
        (0, key) => Some((algorithm, key)),
        _ => None,
    }
}

/// The OID of `Certificate.signatureAlgorithm`.
pub fn signature_algorithm_oid(cert: &[u8]) -> Option<&[u8]> {
    let (outer, _) = tlv(cert, 0x30)?;
    let (_tbs, rest) = tlv(outer, 0x30)?;
    let (alg, _) = tlv(rest, 0x30)?;
    let (oid, _) = tlv(alg, 0x06)?;
    Some(oid)
}

/// Splits one TLV with the expected tag off `input`: (value, rest).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let len = input.get(2..2 + n)?.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((input.get(header..end)?, &input[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn reads_the_key_and_version_of_a_v3_certificate_as_webpki_does() {
        let (pem, _) = crate::net::tls::self_signed(&["localhost"]).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert!(!is_v1(&der));
        let (algorithm, key) = subject_public_key(&der).unwrap();
        let parsed = rustls::server::ParsedCertificate::try_from(&der).unwrap();
        let spki = parsed.subject_public_key_info();
        // webpki's SPKI is the whole SEQUENCE: it must hold exactly what was read here.
        let (inner, rest) = tlv(spki.as_ref(), 0x30).unwrap();
        assert!(rest.is_empty());
        let (alg, rest) = tlv(inner, 0x30).unwrap();
        assert_eq!(alg, algorithm);
        assert_eq!(&tlv(rest, 0x03).unwrap().0[1..], key);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        for input in [&b""[..], b"\x30", b"\x30\x80garbage", b"\x30\x03\x30\x01\x00", b"\x30\x84\xff\xff\xff\xff"] {
            assert!(!is_v1(input));
            assert_eq!(subject_public_key(input), None);
            assert_eq!(signature_algorithm_oid(input), None);
        }
    }
}

//! TLS to PostgreSQL: which `sslmode` the URL asks for, which CA certificates are trusted, and
//! the rustls connector every connection (the pool's and the listener's) is made with.
//!
//! Every TLS session is verified: whatever the mode, keywardd never accepts a server
//! certificate that does not chain to a trusted CA. The modes (libpq's names):
//! - `disable`: no TLS.
//! - `prefer` (the default, as libpq's and tokio-postgres's): TLS if the server offers it,
//!   verified as `verify-full`; without TLS if the server does not offer it (so an active
//!   attacker can still strip TLS: a server that accepts only `hostssl` closes that).
//! - `require`: TLS or no connection, verified as `verify-full`. Stricter than libpq, whose
//!   `require` encrypts but does not verify, which an active attacker defeats.
//! - `verify-ca`: TLS, the certificate chains to a trusted CA, its host name is not checked
//!   (only sound with a CA of your own).
//! - `verify-full`: TLS, the chain and the host name (`host`, or the URL's host; an IP address
//!   must be in the certificate's IP addresses).
//!
//! `allow` (plain first) is refused. The trusted CAs are the system's (rustls-native-certs:
//! `/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), or the PEM file given by
//! `sslrootcert=PATH` in the URL or `--db-ca-file` (not both); `sslrootcert=system` names the
//! system's explicitly.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{CoreError, Result};

/// libpq's `sslmode`, as far as keywardd supports it (see the module's description).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(CoreError::BadLocation(
                    "sslmode=allow (without TLS first) is not supported: use prefer, require \
                     or verify-full"
                        .into(),
                ));
            }
            other => {
                return Err(CoreError::BadLocation(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether TLS may be skipped. Verification is ours.
    pub(super) fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// Whether the certificate must name the host connected to.
    fn checks_host_name(self) -> bool {
        self != SslMode::VerifyCa
    }
}

/// The CA certificates a server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) enum Roots {
    #[default]
    System,
    File(PathBuf),
}

/// The URL's TLS settings, and `--db-ca-file`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TlsOptions {
    pub(super) mode: SslMode,
    roots: Option<Roots>,
}

impl TlsOptions {
    /// These settings as libpq's environment variables, for PostgreSQL's own tools.
    pub(crate) fn libpq_env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut env = vec![("PGSSLMODE", self.mode.as_str().into())];
        match &self.roots {
            Some(Roots::File(path)) => env.push(("PGSSLROOTCERT", path.into())),
            // libpq 15 knows no "system": it is handed the system's bundle (Debian's path).
            Some(Roots::System) | None
                if matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) =>
            {
                env.push(("PGSSLROOTCERT", "/etc/ssl/certs/ca-certificates.crt".into()))
            }
            _ => {}
        }
        env
    }

    /// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query (tokio-postgres
    /// refuses `sslrootcert` and the `verify-*` modes): the URL left for tokio-postgres to
    /// parse, and the settings. Keys and values are percent-decoded as tokio-postgres decodes
    /// them, so an encoded key cannot slip past; a key given twice is refused.
    pub(super) fn take_from_url(url: &str) -> Result<(String, TlsOptions)> {
        let Some(cut) = super::UrlCut::of(url) else {
            return Ok((url.to_string(), TlsOptions::default()));
        };
        let base = cut.base();
        let Some(query) = cut.query else {
            return Ok((base, TlsOptions::default()));
        };
        let mut mode = None;
        let mut roots = None;
        let mut rest = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key)?;
            match key.as_str() {
                "sslmode" => {
                    if mode.replace(SslMode::parse(&decode(value)?)?).is_some() {
                        return Err(twice("sslmode"));
                    }
                }
                "sslrootcert" => {
                    let value = decode(value)?;
                    let found = match value.as_str() {
                        "" => {
                            return Err(CoreError::BadLocation(
                                "sslrootcert= names no file".into(),
                            ));
                        }
                        "system" => Roots::System,
                        path => Roots::File(PathBuf::from(path)),
                    };
                    if roots.replace(found).is_some() {
                        return Err(twice("sslrootcert"));
                    }
                }
                _ => rest.push(pair),
            }
        }
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let options = TlsOptions {
            mode: mode.unwrap_or_default(),
            roots,
        };
        options.check()?;
        Ok((url, options))
    }

    /// `--db-ca-file`: the CA certificates to trust instead of the system's.
    pub(super) fn set_ca_file(&mut self, path: PathBuf) -> Result<()> {
        if self.roots.is_some() {
            return Err(CoreError::BadLocation(
                "the CA is given twice: sslrootcert in the URL and the CA file; keep one".into(),
            ));
        }
        self.roots = Some(Roots::File(path));
        self.check()
    }

    fn check(&self) -> Result<()> {
        if self.mode == SslMode::Disable && self.roots.is_some() {
            return Err(CoreError::BadLocation(
                "a CA to verify the server with, but sslmode=disable turns TLS off".into(),
            ));
        }
        Ok(())
    }

    /// The connector for this mode and these roots, reading the CA file now: a missing or
    /// unreadable file fails here, before any connection.
    pub(super) fn connector(&self) -> Result<Connector> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (roots, trusting) = match (&self.roots, self.mode) {
            (_, SslMode::Disable) => (Arc::new(RootCertStore::empty()), "nothing".to_string()),
            (None | Some(Roots::System), _) => {
                let roots = system_roots();
                let trusting = format!("the system's CA certificates ({} found)", roots.len());
                (roots, trusting)
            }
            (Some(Roots::File(path)), _) => (
                Arc::new(read_ca_file(path)?),
                format!("the CA certificates in {}", path.display()),
            ),
        };
        let verifier = Verifier {
            roots,
            check_host_name: self.mode.checks_host_name(),
            provider: provider.clone(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CoreError::BadLocation(format!("TLS to PostgreSQL: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        // What libpq 17 sends, and what PostgreSQL 17's direct TLS (sslnegotiation=direct)
        // insists on; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector {
            make: MakeRustlsConnect::new(config),
            mode: self.mode,
            trusting,
        })
    }
}

fn decode(text: &str) -> Result<String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|e| CoreError::BadLocation(format!("a PostgreSQL URL: {e}")))
}

fn twice(key: &str) -> CoreError {
    CoreError::BadLocation(format!("{key} is given twice in the PostgreSQL URL"))
}

/// The system's CA certificates, read once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "reading the system's CA certificates");
            }
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            Arc::new(roots)
        })
        .clone()
}

/// A PEM file of CA certificates, every one of which must parse.
fn read_ca_file(path: &Path) -> Result<RootCertStore> {
    let unusable = |e: &dyn std::fmt::Display| {
        CoreError::BadLocation(format!("the CA file {}: {e}", path.display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unusable(&e))? {
        roots
            .add(cert.map_err(|e| unusable(&e))?)
            .map_err(|e| unusable(&e))?;
    }
    if roots.is_empty() {
        return Err(unusable(&"no PEM certificates in it"));
    }
    Ok(roots)
}

/// The TLS side of every connection, made once per pool.
#[derive(Clone)]
pub(super) struct Connector {
    pub(super) make: MakeRustlsConnect,
    mode: SslMode,
    /// Which CAs were trusted, for errors.
    trusting: String,
}

impl Connector {
    /// A connection's error, with the reason in words if TLS refused the server.
    pub(super) fn explain(&self, error: tokio_postgres::Error) -> CoreError {
        match rustls_cause(&error) {
            Some(rustls::Error::InvalidCertificate(reason)) => {
                let words = match reason {
                    CertificateError::UnknownIssuer => "not issued by a trusted CA: ",
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                        "expired: "
                    }
                    _ => "",
                };
                CoreError::Unavailable(format!(
                    "PostgreSQL's TLS certificate is refused, {words}{reason} (sslmode={}, \
                     trusting {})",
                    self.mode.as_str(),
                    self.trusting
                ))
            }
            Some(other) => CoreError::Unavailable(format!(
                "TLS to PostgreSQL failed: {other} (sslmode={})",
                self.mode.as_str()
            )),
            None => CoreError::from(error),
        }
    }
}

/// The rustls error under a connection error (tokio-rustls wraps it in an `io::Error`).
fn rustls_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        next = error.source();
    }
    None
}

/// webpki's verification, as rustls's `WebPkiServerVerifier` does it, with the host name
/// check left out for `verify-ca`. With no roots (a system without CA certificates) every
/// certificate is refused as of an unknown issuer.
#[derive(Debug)]
struct Verifier {
    roots: Arc<RootCertStore>,
    check_host_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.check_host_name {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::{Roots, SslMode, TlsOptions};
    use std::path::PathBuf;

    fn take(url: &str) -> (String, TlsOptions) {
        TlsOptions::take_from_url(url).unwrap()
    }

    #[test]
    fn our_keys_leave_the_url_and_the_rest_stays() {
        let (url, tls) = take("postgres://k@db/k?sslmode=verify-full&sslrootcert=/etc/ca.pem");
        assert_eq!(url, "postgres://k@db/k");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.roots, Some(Roots::File(PathBuf::from("/etc/ca.pem"))));

        let (url, tls) = take("postgres://db/k?user=k&sslmode=require&application_name=x");
        assert_eq!(url, "postgres://db/k?user=k&application_name=x");
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.roots, None);

        // A '?' in the password does not start the query (tokio-postgres reads to the '@').
        let (url, tls) = take("postgres://k:p?sslmode=disable@db/k?sslmode=verify-full");
        assert_eq!(url, "postgres://k:p?sslmode=disable@db/k");
        assert_eq!(tls.mode, SslMode::VerifyFull);

        let (url, tls) = take("postgres://db/k");
        assert_eq!(
            (url.as_str(), tls.mode),
            ("postgres://db/k", SslMode::Prefer)
        );
        assert_eq!(
            take("postgres://db/k?sslrootcert=system").1.roots,
            Some(Roots::System)
        );
        assert_eq!(
            take("postgres://db/k?sslmode=verify-ca")
                .1
                .mode
                .negotiation(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn encoded_keys_and_values_are_decoded_as_tokio_postgres_would() {
        let (url, tls) = take("postgres://db/k?ssl%6Dode=verify%2Dfull&sslrootcert=%2Fca%20x.pem");
        assert_eq!(url, "postgres://db/k");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.roots, Some(Roots::File(PathBuf::from("/ca x.pem"))));
    }

    #[test]
    fn weak_unknown_twice_or_contradictory_settings_are_refused() {
        for url in [
            "postgres://db/k?sslmode=allow",
            "postgres://db/k?sslmode=verify_full",
            "postgres://db/k?sslmode=require&ssl%6dode=disable",
            "postgres://db/k?sslrootcert=/a&sslrootcert=/b",
            "postgres://db/k?sslrootcert=",
            "postgres://db/k?sslmode=disable&sslrootcert=/ca.pem",
        ] {
            assert!(TlsOptions::take_from_url(url).is_err(), "{url}");
        }
        let mut tls = take("postgres://db/k?sslrootcert=/a.pem").1;
        assert!(tls.set_ca_file("/b.pem".into()).is_err());
        let mut tls = take("postgres://db/k?sslmode=disable").1;
        assert!(tls.set_ca_file("/b.pem".into()).is_err());
        let mut tls = take("postgres://db/k?sslmode=verify-full").1;
        tls.set_ca_file("/b.pem".into()).unwrap();
        assert_eq!(tls.roots, Some(Roots::File(PathBuf::from("/b.pem"))));
    }

    #[test]
    fn a_missing_or_empty_ca_file_fails_before_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let mut tls = take("postgres://db/k?sslmode=verify-full").1;
        tls.set_ca_file(dir.path().join("absent.pem")).unwrap();
        assert!(tls.connector().is_err());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let mut tls = take("postgres://db/k").1;
        tls.set_ca_file(empty).unwrap();
        let error = tls.connector().err().unwrap().to_string();
        assert!(error.contains("no PEM certificates"), "{error}");
    }
}

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
//!
//! A client certificate (for `pg_hba.conf`'s `cert` method or `clientcert=`): `sslcert=PATH`
//! and `sslkey=PATH` in the URL, or `--db-cert-file` and `--db-key-file` (a pair from one
//! place or the other). The key is PEM, unencrypted (no `sslpassword`), and refused if its
//! file is open to group or others (as the log key's: owner-only, `chmod 600`); its contents
//! never appear in an error or a log, only its path. Unlike libpq, nothing is read from
//! `~/.postgresql/` unless named.
//!
//! Revocation: `sslcrl=PATH` or `--db-crl-file`, PEM CRLs. With them every certificate in the
//! server's chain below the trusted CA must be covered by a CRL from its issuer and not listed
//! in it, and a CRL past its next update refuses the connection (as libpq's OpenSSL checks
//! with `sslcrl`: the whole chain, expired CRLs refused). Without them revocation is not
//! checked. `sslcrldir` is not supported.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{
    AlertDescription, CertificateError, DigitallySignedStruct, InconsistentKeys, RootCertStore,
    SignatureScheme,
};
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

/// The certificate keywardd shows PostgreSQL, and its private key: two PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClientCert {
    cert: PathBuf,
    key: PathBuf,
}

/// The URL's TLS settings, and `--db-ca-file`, `--db-cert-file`/`--db-key-file` and
/// `--db-crl-file`. Only paths: the files are read by [`TlsOptions::connector`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct TlsOptions {
    pub(super) mode: SslMode,
    roots: Option<Roots>,
    client: Option<ClientCert>,
    crl: Option<PathBuf>,
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
        if let Some(client) = &self.client {
            env.push(("PGSSLCERT", client.cert.clone().into()));
            env.push(("PGSSLKEY", client.key.clone().into()));
        }
        if let Some(crl) = &self.crl {
            env.push(("PGSSLCRL", crl.clone().into()));
        }
        env
    }

    /// Takes `sslmode`, `sslrootcert`, `sslcert`, `sslkey` and `sslcrl` out of a
    /// `postgres://` URL's query (tokio-postgres refuses them and the `verify-*` modes): the
    /// URL left for tokio-postgres to parse, and the settings. Keys and values are
    /// percent-decoded as tokio-postgres decodes them, so an encoded key cannot slip past; a
    /// key given twice is refused.
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
        let (mut cert, mut key, mut crl) = (None, None, None);
        let mut rest = Vec::new();
        for pair in query.split('&') {
            let (key_name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key_name = decode(key_name)?;
            match key_name.as_str() {
                "sslmode" => {
                    if mode.replace(SslMode::parse(&decode(value)?)?).is_some() {
                        return Err(twice("sslmode"));
                    }
                }
                "sslrootcert" => {
                    let found = match file_value("sslrootcert", value)? {
                        path if path.as_os_str() == "system" => Roots::System,
                        path => Roots::File(path),
                    };
                    if roots.replace(found).is_some() {
                        return Err(twice("sslrootcert"));
                    }
                }
                "sslcert" | "sslkey" | "sslcrl" => {
                    let path = file_value(&key_name, value)?;
                    let slot = match key_name.as_str() {
                        "sslcert" => &mut cert,
                        "sslkey" => &mut key,
                        _ => &mut crl,
                    };
                    if slot.replace(path).is_some() {
                        return Err(twice(&key_name));
                    }
                }
                "sslpassword" => {
                    return Err(CoreError::BadLocation(
                        "sslpassword: an encrypted client key is not supported; give keywardd \
                         the key decrypted, in a file only its owner can read"
                            .into(),
                    ));
                }
                _ => rest.push(pair),
            }
        }
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(CoreError::BadLocation(
                    "sslcert without sslkey: a client certificate needs its private key".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(CoreError::BadLocation(
                    "sslkey without sslcert: a client key needs its certificate".into(),
                ));
            }
        };
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let options = TlsOptions {
            mode: mode.unwrap_or_default(),
            roots,
            client,
            crl,
        };
        options.check()?;
        Ok((url, options))
    }

    /// `--db-ca-file`: the CA certificates to trust instead of the system's. On an error
    /// nothing changes.
    pub(super) fn set_ca_file(&mut self, path: PathBuf) -> Result<()> {
        if self.roots.is_some() {
            return Err(CoreError::BadLocation(
                "the CA is given twice: sslrootcert in the URL and the CA file; keep one".into(),
            ));
        }
        self.changed(|tls| tls.roots = Some(Roots::File(path)))
    }

    /// `--db-cert-file` and `--db-key-file`: the client certificate and its key. On an error
    /// nothing changes.
    pub(super) fn set_client_cert(&mut self, cert: PathBuf, key: PathBuf) -> Result<()> {
        if self.client.is_some() {
            return Err(CoreError::BadLocation(
                "the client certificate is given twice: sslcert and sslkey in the URL and the \
                 certificate and key files; keep one"
                    .into(),
            ));
        }
        self.changed(|tls| tls.client = Some(ClientCert { cert, key }))
    }

    /// `--db-crl-file`: the CRLs the server's chain is checked against. On an error nothing
    /// changes.
    pub(super) fn set_crl_file(&mut self, path: PathBuf) -> Result<()> {
        if self.crl.is_some() {
            return Err(CoreError::BadLocation(
                "the CRL is given twice: sslcrl in the URL and the CRL file; keep one".into(),
            ));
        }
        self.changed(|tls| tls.crl = Some(path))
    }

    /// These options with `change` made, if they still hold together; else the error, and
    /// these options as they were.
    fn changed(&mut self, change: impl FnOnce(&mut TlsOptions)) -> Result<()> {
        let mut changed = self.clone();
        change(&mut changed);
        changed.check()?;
        *self = changed;
        Ok(())
    }

    fn check(&self) -> Result<()> {
        if self.mode != SslMode::Disable {
            return Ok(());
        }
        let unused = |what: &str| {
            Err(CoreError::BadLocation(format!(
                "{what}, but sslmode=disable turns TLS off"
            )))
        };
        if self.roots.is_some() {
            return unused("a CA to verify the server with");
        }
        if self.client.is_some() {
            return unused("a client certificate");
        }
        if self.crl.is_some() {
            return unused("a CRL to check the server's certificate against");
        }
        Ok(())
    }

    /// The connector for this mode and these files, reading them now: a missing, unreadable
    /// or unusable file fails here, before any connection, naming the file.
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
        let crls = match &self.crl {
            Some(path) if self.mode != SslMode::Disable => Some((path, read_crl_file(path)?)),
            _ => None,
        };
        let verifier = Verifier::new(roots, crls, self.mode.checks_host_name(), provider.clone())?;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CoreError::BadLocation(format!("TLS to PostgreSQL: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &self.client {
            Some(client) if self.mode != SslMode::Disable => client.authenticate(builder)?,
            _ => builder.with_no_client_auth(),
        };
        // What libpq 17 sends, and what PostgreSQL 17's direct TLS (sslnegotiation=direct)
        // insists on; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector {
            make: MakeRustlsConnect::new(config),
            mode: self.mode,
            trusting,
            client_cert: self.client.as_ref().map(|c| c.cert.clone()),
            crl: self.crl.clone(),
        })
    }
}

impl ClientCert {
    /// The client configuration that shows this certificate, with the key read and checked
    /// against it.
    fn authenticate(
        &self,
        builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    ) -> Result<rustls::ClientConfig> {
        let chain = read_certificates(&self.cert, "client certificate file")?;
        let key = read_key_file(&self.key)?;
        builder.with_client_auth_cert(chain, key).map_err(|e| {
            CoreError::BadLocation(match e {
                rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => format!(
                    "the client key file {} does not match the certificate in {} (the key is \
                     not the certificate's)",
                    self.key.display(),
                    self.cert.display()
                ),
                // rustls's words for a key it cannot use name the key's type, not its bytes.
                other => format!(
                    "the client key file {} with the certificate in {}: {other}",
                    self.key.display(),
                    self.cert.display()
                ),
            })
        })
    }
}

fn decode(text: &str) -> Result<String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|e| CoreError::BadLocation(format!("a PostgreSQL URL: {e}")))
}

/// A URL value that names a file: decoded, and not empty.
fn file_value(key: &str, value: &str) -> Result<PathBuf> {
    match decode(value)? {
        value if value.is_empty() => Err(CoreError::BadLocation(format!("{key}= names no file"))),
        value => Ok(PathBuf::from(value)),
    }
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

/// An error about the file at `path`, which is a `what` ("CA file").
fn file_error(what: &str, path: &Path, reason: &dyn Display) -> CoreError {
    CoreError::BadLocation(format!("the {what} {}: {reason}", path.display()))
}

/// A PEM file of CA certificates, every one of which must parse.
fn read_ca_file(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path, "CA file")? {
        roots
            .add(cert)
            .map_err(|e| file_error("CA file", path, &e))?;
    }
    Ok(roots)
}

/// The certificates in a PEM file, in order; at least one.
fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let unusable = |e: &dyn Display| file_error(what, path, e);
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unusable(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unusable(&e))?;
    if certs.is_empty() {
        return Err(unusable(&"no PEM certificates in it"));
    }
    Ok(certs)
}

/// The CRLs in a PEM file (`X509 CRL`); at least one. Their contents are parsed when the
/// verifier is built.
fn read_crl_file(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let unusable = |e: &dyn Display| file_error("CRL file", path, e);
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| unusable(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unusable(&e))?;
    if crls.is_empty() {
        return Err(unusable(&"no PEM CRLs (X509 CRL) in it"));
    }
    Ok(crls)
}

/// The client's private key: the first PEM key in the file (PKCS#8, PKCS#1 or SEC1), from a
/// file only its owner may read or write (checked on the open file, as the log key's). A
/// secret: no error shows any of its text.
fn read_key_file(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let unusable = |e: &dyn Display| file_error("client key file", path, e);
    let file = std::fs::File::open(path).map_err(|e| unusable(&e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(|e| unusable(&e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(unusable(&format_args!(
                "open to group or others (mode {:o}); a private key must be owner-only: \
                 chmod 600 it",
                mode & 0o777
            )));
        }
    }
    PrivateKeyDer::from_pem_reader(std::io::BufReader::new(file)).map_err(|e| match e {
        pem::Error::NoItemsFound => unusable(
            &"no private key in it (PEM: PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY; an \
              encrypted key is not supported)",
        ),
        pem::Error::Io(e) => unusable(&e),
        // The others may quote the file's lines.
        _ => unusable(&"not a readable PEM file (its text is not shown: it holds a secret)"),
    })
}

/// The TLS side of every connection, made once per pool.
#[derive(Clone)]
pub(super) struct Connector {
    pub(super) make: MakeRustlsConnect,
    mode: SslMode,
    /// Which CAs were trusted, for errors.
    trusting: String,
    /// The client certificate's file, if one is shown, for errors.
    client_cert: Option<PathBuf>,
    /// The CRL file, if any, for errors.
    crl: Option<PathBuf>,
}

impl Connector {
    /// A connection's error, with the reason in words if TLS refused the server (or the server
    /// refused our certificate).
    pub(super) fn explain(&self, error: tokio_postgres::Error) -> CoreError {
        let crl = || {
            self.crl
                .as_ref()
                .map_or("no CRL file".to_string(), |p| p.display().to_string())
        };
        match rustls_cause(&error) {
            Some(rustls::Error::InvalidCertificate(reason)) => {
                let words = match reason {
                    CertificateError::UnknownIssuer => "not issued by a trusted CA: ".into(),
                    CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                        "expired: ".into()
                    }
                    CertificateError::Revoked => format!("revoked, listed in {}: ", crl()),
                    CertificateError::UnknownRevocationStatus => format!(
                        "its revocation status is unknown ({} holds no CRL from its issuer): ",
                        crl()
                    ),
                    CertificateError::ExpiredRevocationList
                    | CertificateError::ExpiredRevocationListContext { .. } => format!(
                        "the CRL in {} is past its next update (get a fresh one): ",
                        crl()
                    ),
                    _ => String::new(),
                };
                CoreError::Unavailable(format!(
                    "PostgreSQL's TLS certificate is refused, {words}{reason} (sslmode={}, \
                     trusting {})",
                    self.mode.as_str(),
                    self.trusting
                ))
            }
            Some(rustls::Error::AlertReceived(alert)) if refuses_certificate(*alert) => {
                match &self.client_cert {
                    Some(cert) => CoreError::Unavailable(format!(
                        "PostgreSQL refused keywardd's client certificate ({}): the server \
                         answered {alert:?} (is it issued by a CA in the server's \
                         ssl_ca_file, unexpired and unrevoked?)",
                        cert.display()
                    )),
                    None => CoreError::Unavailable(format!(
                        "TLS to PostgreSQL failed: the server answered {alert:?} to a \
                         connection without a client certificate (sslmode={})",
                        self.mode.as_str()
                    )),
                }
            }
            Some(other) => CoreError::Unavailable(format!(
                "TLS to PostgreSQL failed: {other} (sslmode={})",
                self.mode.as_str()
            )),
            None => CoreError::from(error),
        }
    }
}

/// A TLS alert by which a server refuses the client's certificate (or the lack of one).
fn refuses_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
    )
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

/// rustls's `WebPkiServerVerifier` (the chain to a trusted CA, the CRLs if any, the host
/// name), with the host name's verdict ignored for `verify-ca`. With no roots (a system
/// without CA certificates) every certificate is refused as of an unknown issuer.
#[derive(Debug)]
struct Verifier {
    /// None: no roots.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    check_host_name: bool,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    fn new(
        roots: Arc<RootCertStore>,
        crls: Option<(&PathBuf, Vec<CertificateRevocationListDer<'static>>)>,
        check_host_name: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Verifier> {
        let webpki = if roots.is_empty() {
            None
        } else {
            let mut builder = WebPkiServerVerifier::builder_with_provider(roots, provider.clone());
            let mut crl_path = None;
            if let Some((path, crls)) = crls {
                // The defaults check the whole chain and refuse an unknown status; an
                // expired CRL is refused too, as OpenSSL (libpq) refuses it.
                builder = builder.with_crls(crls).enforce_revocation_expiration();
                crl_path = Some(path);
            }
            Some(builder.build().map_err(|e| match (e, crl_path) {
                (VerifierBuilderError::InvalidCrl(e), Some(path)) => {
                    file_error("CRL file", path, &format_args!("not a usable CRL: {e:?}"))
                }
                (e, _) => CoreError::BadLocation(format!("TLS to PostgreSQL: {e}")),
            })?)
        };
        Ok(Verifier {
            webpki,
            check_host_name,
            provider,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Err(CertificateError::UnknownIssuer.into());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // The name is checked last, once the chain and its revocation have passed (the
            // tests hold rustls to that: verify-ca refuses a wrong CA under a wrong name).
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_host_name => Ok(ServerCertVerified::assertion()),
            verdict => verdict,
        }
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
    use super::{ClientCert, Roots, SslMode, TlsOptions, Verifier};
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
    use rustls::{CertificateError, RootCertStore};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

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
            "postgres://db/k?sslcert=/c.pem",
            "postgres://db/k?sslkey=/k.pem",
            "postgres://db/k?sslcert=/c.pem&sslkey=",
            "postgres://db/k?sslcert=/c.pem&sslkey=/k.pem&ssl%6Bey=/k2.pem",
            "postgres://db/k?sslcrl=/a.pem&sslcrl=/b.pem",
            "postgres://db/k?sslcrl=",
            "postgres://db/k?sslmode=disable&sslcert=/c.pem&sslkey=/k.pem",
            "postgres://db/k?sslmode=disable&sslcrl=/crl.pem",
            "postgres://db/k?sslcert=/c.pem&sslkey=/k.pem&sslpassword=x",
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

        let mut tls = take("postgres://db/k?sslcert=/c.pem&sslkey=/k.pem&sslcrl=/crl.pem").1;
        let error = tls
            .set_client_cert("/c2.pem".into(), "/k2.pem".into())
            .unwrap_err();
        assert!(error.to_string().contains("given twice"), "{error}");
        assert!(tls.set_crl_file("/crl2.pem".into()).is_err());
        assert_eq!(
            tls,
            take("postgres://db/k?sslcert=/c.pem&sslkey=/k.pem&sslcrl=/crl.pem").1
        );
        let error = TlsOptions::take_from_url("postgres://db/k?sslpassword=x").unwrap_err();
        assert!(
            error.to_string().contains("encrypted client key"),
            "{error}"
        );
    }

    #[test]
    fn client_certificate_and_crl_come_from_the_url_or_the_flags() {
        let (url, tls) = take(
            "postgres://k@db/k?sslmode=verify-full&sslcert=/c%20x.pem&application_name=a\
             &sslkey=/k.pem&sslcrl=/crl.pem",
        );
        assert_eq!(url, "postgres://k@db/k?application_name=a");
        assert_eq!(
            tls.client,
            Some(ClientCert {
                cert: "/c x.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert_eq!(tls.crl, Some(PathBuf::from("/crl.pem")));

        let mut tls = take("postgres://db/k?sslmode=verify-full").1;
        tls.set_client_cert("/c.pem".into(), "/k.pem".into())
            .unwrap();
        tls.set_crl_file("/crl.pem".into()).unwrap();
        assert_eq!(
            tls,
            take(
                "postgres://db/k?sslmode=verify-full&sslcert=/c.pem&sslkey=/k.pem&sslcrl=/crl.pem"
            )
            .1
        );
    }

    #[test]
    fn a_refused_setting_changes_nothing() {
        let before = take("postgres://db/k?sslmode=disable").1;
        let mut tls = before.clone();
        assert!(tls.set_ca_file("/ca.pem".into()).is_err());
        assert!(
            tls.set_client_cert("/c.pem".into(), "/k.pem".into())
                .is_err()
        );
        let error = tls.set_crl_file("/crl.pem".into()).unwrap_err();
        assert!(error.to_string().contains("sslmode=disable"), "{error}");
        assert_eq!(tls, before);
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

    /// A CA, a server certificate for `localhost` (serial 1000) under it, a client
    /// certificate (CN `keyward`) under it, and a second CA; each certificate and key as PEM.
    struct Pki {
        ca: rcgen::Issuer<'static, rcgen::KeyPair>,
        ca_pem: String,
        other: rcgen::Issuer<'static, rcgen::KeyPair>,
        other_pem: String,
        server: CertificateDer<'static>,
        client_pem: String,
        client_key_pem: String,
        other_key_pem: String,
    }

    fn pki() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        use rcgen::{KeyUsagePurpose, SerialNumber};
        let new_ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, ca) = new_ca("test CA");
        let (other_pem, other) = new_ca("other CA");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.serial_number = Some(SerialNumber::from(1000u64));
        let server = params
            .signed_by(&KeyPair::generate().unwrap(), &ca)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "keyward");
        let client = params.signed_by(&client_key, &ca).unwrap();
        Pki {
            ca,
            ca_pem,
            other,
            other_pem,
            server: server.der().clone(),
            client_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
            other_key_pem: KeyPair::generate().unwrap().serialize_pem(),
        }
    }

    /// A CRL by `issuer` revoking `serials`, valid until `next_year`.
    fn crl(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, serials: &[u64], next_year: i32) -> String {
        use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams};
        CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2000, 1, 1),
            next_update: rcgen::date_time_ymd(next_year, 1, 1),
            crl_number: 1u64.into(),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: serial.into(),
                    revocation_time: rcgen::date_time_ymd(2000, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .pem()
        .unwrap()
    }

    /// The verifier's verdict on `pki.server` as `host`, trusting `ca_pem`, with `crls`.
    fn verdict(
        pki: &Pki,
        ca_pem: &str,
        crls: &[&str],
        check_host_name: bool,
        host: &str,
    ) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let crls: Vec<_> = crls
            .iter()
            .map(|pem| CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap())
            .collect();
        let path = PathBuf::from("crl.pem");
        let verifier = Verifier::new(
            Arc::new(roots),
            (!crls.is_empty()).then_some((&path, crls)),
            check_host_name,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .unwrap();
        verifier
            .verify_server_cert(
                &pki.server,
                &[],
                &ServerName::try_from(host.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    fn refused_for(verdict: Result<(), rustls::Error>) -> CertificateError {
        match verdict {
            Err(rustls::Error::InvalidCertificate(reason)) => reason,
            other => panic!("not refused for the certificate: {other:?}"),
        }
    }

    #[test]
    fn verify_ca_skips_only_the_name_and_never_the_chain_or_revocation() {
        let pki = pki();
        verdict(&pki, &pki.ca_pem, &[], true, "localhost").unwrap();
        verdict(&pki, &pki.ca_pem, &[], false, "db.example.org").unwrap();
        assert!(matches!(
            refused_for(verdict(&pki, &pki.ca_pem, &[], true, "db.example.org")),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        ));
        // A wrong CA under a wrong name: the chain's verdict, not the name's.
        assert_eq!(
            refused_for(verdict(&pki, &pki.other_pem, &[], false, "db.example.org")),
            CertificateError::UnknownIssuer
        );
        let revoked = crl(&pki.ca, &[1000], 2100);
        assert_eq!(
            refused_for(verdict(
                &pki,
                &pki.ca_pem,
                &[&revoked],
                false,
                "db.example.org"
            )),
            CertificateError::Revoked
        );
    }

    #[test]
    fn crls_revoke_and_an_unknown_or_stale_status_is_refused() {
        let pki = pki();
        let revoked = crl(&pki.ca, &[1000], 2100);
        let others_revoked = crl(&pki.ca, &[7, 8], 2100);
        assert_eq!(
            refused_for(verdict(&pki, &pki.ca_pem, &[&revoked], true, "localhost")),
            CertificateError::Revoked
        );
        verdict(&pki, &pki.ca_pem, &[&others_revoked], true, "localhost").unwrap();
        // Only a CRL from another CA: the server's status is unknown.
        let from_other = crl(&pki.other, &[], 2100);
        assert_eq!(
            refused_for(verdict(
                &pki,
                &pki.ca_pem,
                &[&from_other],
                true,
                "localhost"
            )),
            CertificateError::UnknownRevocationStatus
        );
        verdict(
            &pki,
            &pki.ca_pem,
            &[&from_other, &others_revoked],
            true,
            "localhost",
        )
        .unwrap();
        let stale = crl(&pki.ca, &[], 2001);
        assert!(matches!(
            refused_for(verdict(&pki, &pki.ca_pem, &[&stale], true, "localhost")),
            CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. }
        ));
    }

    /// Writes `text` to `dir/name` with `mode` (on Unix).
    fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = mode;
        path
    }

    /// The connector's error for these settings, which must name `named`.
    fn connector_error(url: &str, named: &Path) -> String {
        let error = match take(url).1.connector() {
            Ok(_) => panic!("{url}: a connector made"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.contains(&named.display().to_string()),
            "{url}: {error}"
        );
        error
    }

    #[test]
    fn bad_client_certificate_key_and_crl_files_fail_before_any_connection() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let ca = file(dir.path(), "ca.pem", &pki.ca_pem, 0o644);
        let cert = file(dir.path(), "client.crt", &pki.client_pem, 0o644);
        let key = file(dir.path(), "client.key", &pki.client_key_pem, 0o600);
        let base = format!(
            "postgres://db/k?sslmode=verify-full&sslrootcert={}",
            ca.display()
        );
        let with = |cert: &Path, key: &Path| {
            format!("{base}&sslcert={}&sslkey={}", cert.display(), key.display())
        };
        take(&with(&cert, &key)).1.connector().unwrap();

        let absent = dir.path().join("absent.pem");
        connector_error(&with(&absent, &key), &absent);
        connector_error(&with(&cert, &absent), &absent);
        let garbage = file(dir.path(), "garbage.pem", "not PEM at all\n", 0o600);
        let error = connector_error(&with(&garbage, &key), &garbage);
        assert!(error.contains("no PEM certificates"), "{error}");
        let error = connector_error(&with(&cert, &garbage), &garbage);
        assert!(error.contains("no private key"), "{error}");

        // The key must be owner-only, and its text never shows, even when it is not PEM.
        #[cfg(unix)]
        {
            let open = file(dir.path(), "open.key", &pki.client_key_pem, 0o640);
            let error = connector_error(&with(&cert, &open), &open);
            assert!(
                error.contains("mode 640") && error.contains("chmod 600"),
                "{error}"
            );
            assert!(!error.contains("PRIVATE"), "{error}");
        }
        let broken = file(
            dir.path(),
            "broken.key",
            "-----BEGIN PRIVATE KEY-----\nSECRET!SECRET\n-----END PRIVATE KEY-----\n",
            0o600,
        );
        let error = connector_error(&with(&cert, &broken), &broken);
        assert!(!error.contains("SECRET"), "{error}");

        // Another key than the certificate's: both files named.
        let other_key = file(dir.path(), "other.key", &pki.other_key_pem, 0o600);
        let error = connector_error(&with(&cert, &other_key), &other_key);
        assert!(
            error.contains("does not match") && error.contains(&cert.display().to_string()),
            "{error}"
        );

        // CRLs: absent, not PEM, a CRL that is not one, and a good one.
        let crl_url = |crl: &Path| format!("{base}&sslcrl={}", crl.display());
        connector_error(&crl_url(&absent), &absent);
        let error = connector_error(&crl_url(&garbage), &garbage);
        assert!(error.contains("no PEM CRLs"), "{error}");
        let fake = file(
            dir.path(),
            "fake.crl",
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
            0o644,
        );
        let error = connector_error(&crl_url(&fake), &fake);
        assert!(error.contains("not a usable CRL"), "{error}");
        let good = file(dir.path(), "good.crl", &crl(&pki.ca, &[5], 2100), 0o644);
        take(&crl_url(&good)).1.connector().unwrap();
    }
}

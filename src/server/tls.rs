//! Serving certificate: loading, dev-mode generation, and hot rotation.
//!
//! Rotation is detected by polling, not inotify: the kubelet updates a Secret volume by writing a new
//! timestamped directory and atomically swapping the `..data` symlink, so `tls.crt` (itself a symlink to
//! `..data/tls.crt`) is never written in place and a watcher on the file misses the change. Re-reading
//! the two small files every few seconds through the configured paths and comparing bytes catches every
//! form of rotation (symlink swap, in-place write, rename over).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Errors from loading, generating or writing certificates; file errors name the path involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    // `error` is deliberately not a `source`: the message already ends with it, and a source
    // would make every error chain (`{:#}`, anyhow) print the OS error twice.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What was being done ("read", "write", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file was read but does not hold a usable certificate or key.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen could not make a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsError {
    /// The file the error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::Io { path, .. } | TlsError::Invalid { path, .. } => Some(path),
            TlsError::Generate(_) | TlsError::Config(_) => None,
        }
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TlsError {
    let path = path.to_path_buf();
    move |error| TlsError::Io {
        action,
        path,
        error,
    }
}

fn invalid(path: &Path, what: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

/// Where the serving certificate and key are read from (re-read on every reload check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// PEM text of a freshly generated CA and a serving certificate signed by it, for dev/offline mode and tests.
#[derive(Debug, Clone)]
pub struct DevChain {
    /// The CA certificate clients trust.
    pub ca_cert_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
}

/// Generate a throwaway CA and a serving certificate (ECDSA P-256, serverAuth, valid one year) so the
/// server can run without cert-manager; SANs that parse as IP addresses become IP SANs.
pub fn generate_dev_chain(sans: &[&str]) -> Result<DevChain, TlsError> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    let params = |sans: Vec<String>, cn: &str, usage: KeyUsagePurpose| {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![usage];
        p.not_before = now - Duration::from_secs(300); // tolerate small clock skew
        p.not_after = now + Duration::from_secs(365 * 24 * 3600);
        Ok::<_, rcgen::Error>(p)
    };
    let new_key = || KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256);

    let ca_key = new_key()?;
    let mut ca = params(vec![], "milo-webhook dev CA", KeyUsagePurpose::KeyCertSign)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let sans = sans.iter().map(|s| s.to_string()).collect();
    let key = new_key()?;
    let mut leaf = params(sans, "milo-webhook", KeyUsagePurpose::DigitalSignature)?;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(DevChain {
        ca_cert_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Files written by [`ensure_dev_certificates`]: the CA to trust (e.g. as a webhook `caBundle`) and the
/// serving pair.
#[derive(Debug, Clone)]
pub struct DevCertificates {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The serving certificate and key.
    pub paths: CertPaths,
}

/// For offline/dev mode: make sure `dir` holds `ca.crt`, `tls.crt`, `tls.key` for `localhost` and
/// `127.0.0.1`, reusing existing files when they form a valid pair (and the leaf still verifies against
/// `ca.crt` for `localhost`), so restarts keep the same CA.
pub fn ensure_dev_certificates(dir: &Path) -> Result<DevCertificates, TlsError> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let paths = CertPaths {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    let out = DevCertificates {
        ca: dir.join("ca.crt"),
        paths,
    };
    if existing_dev_files_usable(&out).is_some() {
        return Ok(out);
    }
    let chain = generate_dev_chain(&["localhost", "127.0.0.1"])?;
    write_atomically(&out.paths.key, chain.key_pem.as_bytes(), 0o600)?;
    write_atomically(&out.paths.cert, chain.cert_pem.as_bytes(), 0o644)?;
    write_atomically(&out.ca, chain.ca_cert_pem.as_bytes(), 0o644)?;
    Ok(out)
}

/// Existing dev files are reused only if the pair parses and matches and the leaf still verifies
/// against `ca.crt` for `localhost` now (so an expired or foreign leaf is regenerated).
fn existing_dev_files_usable(files: &DevCertificates) -> Option<()> {
    let read = |p: &Path| std::fs::read(p).ok();
    let (ca, cert, key) = (
        read(&files.ca)?,
        read(&files.paths.cert)?,
        read(&files.paths.key)?,
    );
    let provider = ring_provider();
    let ck = parse_pair(&files.paths, &cert, &key, &provider).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&ca).flatten());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider);
    let name = ServerName::try_from("localhost").ok()?;
    let (leaf, rest) = ck.cert.split_first()?;
    let verified =
        verifier
            .build()
            .ok()?
            .verify_server_cert(leaf, rest, &name, &[], UnixTime::now());
    verified.ok().map(drop)
}

/// Write via a fresh temp file + rename so a running server never reads a half-written file.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(io_err("write", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("write", path))
}

/// Outcome of one reload check, reported to the caller for logging and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are as last seen.
    Unchanged,
    /// New files were parsed and are now served.
    Reloaded,
    /// New files did not parse; the previous certificate is still served.
    Failed(String),
}

/// What the files contained at the last check (good or bad), so unchanged or persistently bad files are
/// not re-parsed and re-reported every tick.
struct Seen {
    cert: Vec<u8>,
    key: Vec<u8>,
    read_error: Option<String>,
}

/// A rustls certificate resolver that serves the last good certificate and swaps it at runtime, so a
/// rotated Secret takes effect without restarting the server or dropping connections.
pub struct ReloadingCertResolver {
    paths: CertPaths,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for ReloadingCertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertResolver")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertResolver {
    /// Initial load; fails if the files are missing, do not parse, or the key does not match the cert.
    pub fn load(paths: CertPaths) -> Result<Arc<Self>, TlsError> {
        let provider = ring_provider();
        let (cert, key) = read_pair(&paths)?;
        let ck = parse_pair(&paths, &cert, &key, &provider)?;
        Ok(Arc::new(Self {
            paths,
            provider,
            current: RwLock::new(Arc::new(ck)),
            seen: Mutex::new(Seen {
                cert,
                key,
                read_error: None,
            }),
        }))
    }

    /// Re-read both files through the configured paths (following symlinks); if their bytes changed, parse
    /// and swap. On bad input keep serving the old certificate, report `Failed` once, and report
    /// `Unchanged` for the same bad bytes (or the same read error) afterwards.
    pub fn reload_if_changed(&self) -> ReloadOutcome {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (cert, key) = match read_pair(&self.paths) {
            Ok(pair) => pair,
            Err(e) => {
                let msg = e.to_string();
                if seen.read_error.as_deref() == Some(msg.as_str()) {
                    return ReloadOutcome::Unchanged;
                }
                seen.read_error = Some(msg.clone());
                return ReloadOutcome::Failed(msg);
            }
        };
        seen.read_error = None;
        if cert == seen.cert && key == seen.key {
            return ReloadOutcome::Unchanged;
        }
        let parsed = parse_pair(&self.paths, &cert, &key, &self.provider);
        seen.cert = cert;
        seen.key = key;
        match parsed {
            Ok(ck) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
                ReloadOutcome::Reloaded
            }
            Err(e) => ReloadOutcome::Failed(format!("keeping previous certificate: {e}")),
        }
    }

    /// DER of the leaf certificate now served (for tests and diagnostics).
    pub fn current_leaf_der(&self) -> Vec<u8> {
        self.current()
            .cert
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read cert, key, then cert again, retrying if the cert changed meanwhile: a rotation between the two
/// reads would otherwise pair an old cert with a new key and report a spurious mismatch.
fn read_pair(paths: &CertPaths) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(io_err("read", p));
    let (mut cert, mut key) = (read(&paths.cert)?, read(&paths.key)?);
    for _ in 0..3 {
        let again = read(&paths.cert)?;
        if again == cert {
            break;
        }
        (cert, key) = (again, read(&paths.key)?);
    }
    Ok((cert, key))
}

fn parse_pair(
    paths: &CertPaths,
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&paths.cert, "invalid PEM certificate data", e))?;
    if chain.is_empty() {
        let reason = "no CERTIFICATE PEM block found".to_string();
        return Err(TlsError::Invalid {
            path: paths.cert.clone(),
            reason,
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| invalid(&paths.key, "no usable PEM private key", e))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| invalid(&paths.key, "unsupported private key", e))?;
    let ck = CertifiedKey::new(chain, signing_key);
    let what = format!("does not match certificate {}", paths.cert.display());
    ck.keys_match().map_err(|e| invalid(&paths.key, &what, e))?;
    Ok(ck)
}

/// rustls server config backed by the reloading resolver (ring provider, safe default protocol versions,
/// no client auth, ALPN h2 then http/1.1).
pub fn server_config(
    resolver: Arc<ReloadingCertResolver>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Poll for rotation every `interval` until `shutdown` resolves, logging and reporting every `Reloaded`
/// or `Failed` outcome to `on_outcome` (e.g. to bump a metric).
pub async fn watch_for_rotation(
    resolver: Arc<ReloadingCertResolver>,
    interval: Duration,
    on_outcome: impl Fn(&ReloadOutcome) + Send + 'static,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the initial load already happened
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        let r = resolver.clone();
        let Ok(outcome) = tokio::task::spawn_blocking(move || r.reload_if_changed()).await else {
            continue;
        };
        match &outcome {
            ReloadOutcome::Unchanged => continue,
            ReloadOutcome::Reloaded => {
                tracing::info!(cert = %resolver.paths.cert.display(), "reloaded serving certificate")
            }
            ReloadOutcome::Failed(e) => {
                tracing::error!(error = %e, "serving certificate reload failed")
            }
        }
        on_outcome(&outcome);
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn chain() -> DevChain {
        generate_dev_chain(&["localhost", "127.0.0.1"]).unwrap()
    }

    fn leaf_der(chain: &DevChain) -> Vec<u8> {
        CertificateDer::from_pem_slice(chain.cert_pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// Kubelet-style publish: write a timestamped dir, point `..data_tmp` at it, rename it over `..data`
    /// (atomic swap), then drop the previous dir. The first publish also creates the top-level symlinks.
    fn publish(dir: &Path, ts: &str, cert: &str, key: &str) -> CertPaths {
        fs::create_dir(dir.join(ts)).unwrap();
        fs::write(dir.join(ts).join("tls.crt"), cert).unwrap();
        fs::write(dir.join(ts).join("tls.key"), key).unwrap();
        let old = fs::read_link(dir.join("..data")).ok();
        symlink(ts, dir.join("..data_tmp")).unwrap();
        fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        match old {
            Some(old) => fs::remove_dir_all(dir.join(old)).unwrap(),
            None => {
                symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
                symlink("..data/tls.key", dir.join("tls.key")).unwrap();
            }
        }
        CertPaths {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    /// Real TLS handshake on 127.0.0.1 trusting only `ca_pem`; returns the leaf DER the client saw.
    async fn handshake(resolver: Arc<ReloadingCertResolver>, ca_pem: &str) -> Vec<u8> {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(resolver).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut tls = acceptor
                .accept(listener.accept().await.unwrap().0)
                .await
                .unwrap();
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            tls.write_all(b"pong").await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        server.await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    #[tokio::test]
    async fn dev_chain_loads_and_verifies_in_a_real_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let c = chain();
        let paths = CertPaths {
            cert: dir.path().join("a.crt"),
            key: dir.path().join("a.key"),
        };
        fs::write(&paths.cert, &c.cert_pem).unwrap();
        fs::write(&paths.key, &c.key_pem).unwrap();
        let resolver = ReloadingCertResolver::load(paths).unwrap();
        assert_eq!(resolver.current_leaf_der(), leaf_der(&c));
        assert_eq!(handshake(resolver, &c.ca_cert_pem).await, leaf_der(&c));
    }

    #[tokio::test]
    async fn kubelet_style_symlink_swap_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (chain(), chain());
        let old_ts = "..2026_11_21_00_00_00.1";
        let paths = publish(dir.path(), old_ts, &old.cert_pem, &old.key_pem);
        let resolver = ReloadingCertResolver::load(paths).unwrap();
        assert_eq!(resolver.reload_if_changed(), ReloadOutcome::Unchanged);

        publish(
            dir.path(),
            "..2026_11_21_00_01_00.2",
            &new.cert_pem,
            &new.key_pem,
        );
        assert!(!dir.path().join(old_ts).exists());
        assert_eq!(resolver.reload_if_changed(), ReloadOutcome::Reloaded);
        assert_eq!(resolver.current_leaf_der(), leaf_der(&new));
        assert_eq!(handshake(resolver, &new.ca_cert_pem).await, leaf_der(&new));
    }

    #[test]
    fn bad_rotation_keeps_serving_and_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let (good, other) = (chain(), chain());
        let resolver =
            ReloadingCertResolver::load(publish(dir.path(), "..1", &good.cert_pem, &good.key_pem));
        let resolver = resolver.unwrap();
        let failed = |needle: &str| match resolver.reload_if_changed() {
            ReloadOutcome::Failed(m) => assert!(m.contains(needle), "{m}"),
            o => panic!("expected Failed, got {o:?}"),
        };

        publish(dir.path(), "..2", "this is not PEM", &good.key_pem);
        failed("tls.crt");
        assert_eq!(resolver.current_leaf_der(), leaf_der(&good));
        assert_eq!(resolver.reload_if_changed(), ReloadOutcome::Unchanged);

        publish(dir.path(), "..3", &other.cert_pem, &good.key_pem);
        failed("does not match");
        assert_eq!(resolver.current_leaf_der(), leaf_der(&good));
        assert_eq!(resolver.reload_if_changed(), ReloadOutcome::Unchanged);

        fs::remove_file(dir.path().join("..3/tls.key")).unwrap();
        failed("tls.key");
        assert_eq!(resolver.reload_if_changed(), ReloadOutcome::Unchanged);

        publish(dir.path(), "..4", &other.cert_pem, &other.key_pem);
        assert_eq!(resolver.reload_if_changed(), ReloadOutcome::Reloaded);
        assert_eq!(resolver.current_leaf_der(), leaf_der(&other));
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("missing.crt");
        let err = ReloadingCertResolver::load(CertPaths {
            cert: cert.clone(),
            key: cert.clone(),
        });
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains(&cert.display().to_string()), "{msg}");
    }

    #[test]
    fn dev_certificates_are_created_reused_and_regenerated() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("certs");
        let snapshot = |d: &DevCertificates| {
            [&d.ca, &d.paths.cert, &d.paths.key].map(|p| fs::read(p).unwrap())
        };
        let first = ensure_dev_certificates(&target).unwrap();
        let bytes = snapshot(&first);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&first.paths.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        ReloadingCertResolver::load(first.paths.clone()).unwrap();

        assert_eq!(snapshot(&ensure_dev_certificates(&target).unwrap()), bytes);

        fs::write(&first.paths.key, "corrupt").unwrap();
        let third = ensure_dev_certificates(&target).unwrap();
        let regenerated = snapshot(&third);
        assert!(regenerated[0] != bytes[0] && regenerated[1] != bytes[1]);
        ReloadingCertResolver::load(third.paths).unwrap();
    }

    #[tokio::test]
    async fn watcher_reports_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (chain(), chain());
        let paths = publish(dir.path(), "..1", &a.cert_pem, &a.key_pem);
        let resolver = ReloadingCertResolver::load(paths).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let report = move |o: &ReloadOutcome| drop(tx.send(o.clone()));
        let stop = async move { drop(stop_rx.await) };
        let ms50 = Duration::from_millis(50);
        let watcher = tokio::spawn(watch_for_rotation(resolver.clone(), ms50, report, stop));

        publish(dir.path(), "..2", &b.cert_pem, &b.key_pem);
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(got.unwrap(), Some(ReloadOutcome::Reloaded));
        assert_eq!(resolver.current_leaf_der(), leaf_der(&b));
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .unwrap()
            .unwrap();
    }
}

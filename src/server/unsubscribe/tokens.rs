//! One-click tokens and the keys they are signed with.
//!
//! A token is `<key id>.<payload>.<signature>`, all base64url: the payload is the JSON of a
//! [`Target`], the signature HMAC-SHA256 over `<key id>.<payload>`, and the key id is derived
//! from the key itself (a MAC of a fixed label), so no operator has to name keys. Several keys
//! verify at once ([`UnsubscribeKeys`]): the signing key and older ones, so a key rotates without
//! breaking the links in mail already sent. Tokens minted before key ids (`<payload>.<signature>`)
//! verify against the signing key first, then the older ones.
//!
//! The key files are re-read every few seconds the way the serving certificate is
//! ([`crate::server::tls`]): through the configured paths, comparing bytes, so a Secret volume's
//! `..data` symlink swap is seen like an in-place write; a bad new key is reported and the keys in
//! use are kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::UNSUBSCRIBE_PATH;
use crate::server::tls::ReloadOutcome;

/// Shortest signing key accepted: HMAC-SHA256's own block of security.
pub const MIN_KEY_BYTES: usize = 32;

/// Longest token looked at: a target's names and uids are bounded by Kubernetes (253 bytes
/// each), so a real token is well under this, and nothing longer costs a MAC.
pub const MAX_TOKEN_BYTES: usize = 2048;

/// Older keys kept for verification at most (each costs a MAC for a token without a key id).
pub const MAX_VERIFICATION_KEYS: usize = 8;

/// What the key id is a MAC of.
const KEY_ID_LABEL: &[u8] = b"milo-webhook one-click unsubscribe key id";

/// One key tokens are signed or verified with, and its id.
#[derive(Clone)]
pub struct UnsubscribeKey {
    key: hmac::Key,
    id: String,
}

impl std::fmt::Debug for UnsubscribeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The id is safe to show (it is in every link); the key never is.
        write!(f, "UnsubscribeKey({})", self.id)
    }
}

impl UnsubscribeKey {
    /// A key from the bytes of a Secret (surrounding whitespace dropped); at least
    /// [`MIN_KEY_BYTES`] long.
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the unsubscribe signing key has {} bytes; it needs at least {MIN_KEY_BYTES}",
                secret.len()
            ));
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let id = URL_SAFE_NO_PAD.encode(&hmac::sign(&key, KEY_ID_LABEL).as_ref()[..6]);
        Ok(Self { key, id })
    }

    /// The key's id, as links carry it: 8 base64url characters.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// HMAC-SHA256 of `data`, base64url: what other signed values of the events listener (the
    /// preference page's links and forms) are made with, under the same keys and rotation.
    pub fn sign(&self, data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, data).as_ref())
    }

    /// Whether `signature` (base64url) is this key's HMAC of `data`, compared in constant time.
    pub fn verifies(&self, data: &[u8], signature: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(signature)
            .is_ok_and(|tag| hmac::verify(&self.key, data, &tag).is_ok())
    }
}

/// One object a token names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// Whom a link unsubscribes from what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The Contact.
    pub contact: Named,
    /// The ContactGroup.
    pub group: Named,
}

/// The token for `target` under `key`: `<key id>.<payload>.<signature>`.
pub fn mint(key: &UnsubscribeKey, target: &Target) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(target).unwrap_or_default());
    let signed = format!("{}.{payload}", key.id);
    let signature = hmac::sign(&key.key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// A token as minted before key ids, `<payload>.<signature>`; what links in older mail carry.
pub fn mint_without_key_id(key: &UnsubscribeKey, target: &Target) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(target).unwrap_or_default());
    let signature = hmac::sign(&key.key, payload.as_bytes());
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// The link for `target` under `base` (the listener's public address), signed with the current
/// signing key of `keys`.
pub fn link(base: &str, keys: &UnsubscribeKeys, target: &Target) -> String {
    format!(
        "{}{UNSUBSCRIBE_PATH}/{}",
        base.trim_end_matches('/'),
        mint(&keys.current().signing, target)
    )
}

/// The target of a genuine token under any of `keys`; `None` for anything forged, altered,
/// malformed, too long or signed by a key no longer configured.
pub fn verify(keys: &UnsubscribeKeys, token: &str) -> Option<Target> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let set = keys.current();
    let (signed, signature) = token.rsplit_once('.')?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let payload = match signed.split_once('.') {
        Some((id, payload)) => {
            let key = set.all().find(|key| key.id == id)?;
            hmac::verify(&key.key, signed.as_bytes(), &signature).ok()?;
            payload
        }
        None => {
            set.all()
                .find(|key| hmac::verify(&key.key, signed.as_bytes(), &signature).is_ok())?;
            signed
        }
    };
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// The keys in force: one signs, all verify.
#[derive(Debug)]
pub struct KeySet {
    /// Signs new tokens, and verifies.
    pub signing: UnsubscribeKey,
    /// Older keys: verify only.
    pub verifying: Vec<UnsubscribeKey>,
}

impl KeySet {
    /// The signing key first, then the older ones.
    pub fn all(&self) -> impl Iterator<Item = &UnsubscribeKey> {
        std::iter::once(&self.signing).chain(&self.verifying)
    }

    /// The key with id `id`, signing or older.
    pub fn by_id(&self, id: &str) -> Option<&UnsubscribeKey> {
        self.all().find(|key| key.id == id)
    }
}

/// Where the keys are read from.
#[derive(Clone, Debug)]
pub struct KeyFiles {
    /// The signing key (`--unsubscribe-signing-key-file`).
    pub signing: PathBuf,
    /// Older keys (`--unsubscribe-verification-key-file`); an empty file holds none.
    pub verifying: Vec<PathBuf>,
}

/// The keys of one-click tokens, swapped at runtime when their files change.
#[derive(Debug)]
pub struct UnsubscribeKeys {
    current: RwLock<Arc<KeySet>>,
    files: Option<KeyFiles>,
    /// The bytes last read (good or bad), so unchanged files are neither parsed nor reported.
    seen: Mutex<Vec<Vec<u8>>>,
}

impl UnsubscribeKeys {
    /// A fixed set of keys, never reloaded.
    pub fn new(signing: UnsubscribeKey, verifying: Vec<UnsubscribeKey>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(KeySet { signing, verifying })),
            files: None,
            seen: Mutex::new(Vec::new()),
        })
    }

    /// One key that signs and verifies, never reloaded.
    pub fn single(key: UnsubscribeKey) -> Arc<Self> {
        Self::new(key, Vec::new())
    }

    /// Reads the keys from `files`; the error names the file at fault.
    pub fn load(files: KeyFiles) -> Result<Arc<Self>, String> {
        let bytes = read_all(&files)?;
        let set = parse_all(&files, &bytes)?;
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(set)),
            files: Some(files),
            seen: Mutex::new(bytes),
        }))
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the files; swaps the keys when they changed and parse, keeps them otherwise
    /// (reporting a bad change once).
    pub fn reload_if_changed(&self) -> ReloadOutcome {
        let Some(files) = &self.files else {
            return ReloadOutcome::Unchanged;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = match read_all(files) {
            Ok(bytes) => bytes,
            Err(error) => {
                // Reported once: the same error later is the same state.
                let marker = vec![error.clone().into_bytes()];
                if *seen == marker {
                    return ReloadOutcome::Unchanged;
                }
                *seen = marker;
                return ReloadOutcome::Failed(format!("keeping the keys in use: {error}"));
            }
        };
        if *seen == bytes {
            return ReloadOutcome::Unchanged;
        }
        let parsed = parse_all(files, &bytes);
        *seen = bytes;
        match parsed {
            Ok(set) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                ReloadOutcome::Reloaded
            }
            Err(error) => ReloadOutcome::Failed(format!("keeping the keys in use: {error}")),
        }
    }

    /// Checks the files every `interval` until `shutdown`, logging what changed.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        if self.files.is_none() {
            return;
        }
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let keys = self.clone();
            let Ok(outcome) = tokio::task::spawn_blocking(move || keys.reload_if_changed()).await
            else {
                continue;
            };
            match outcome {
                ReloadOutcome::Unchanged => {}
                ReloadOutcome::Reloaded => {
                    let set = self.current();
                    let ids: Vec<&str> = set.all().map(UnsubscribeKey::id).collect();
                    tracing::info!(
                        signing = set.signing.id(),
                        ?ids,
                        "reloaded the unsubscribe keys"
                    );
                }
                ReloadOutcome::Failed(error) => {
                    tracing::error!(%error, "unsubscribe key reload failed");
                }
            }
        }
    }
}

fn read_all(files: &KeyFiles) -> Result<Vec<Vec<u8>>, String> {
    std::iter::once(&files.signing)
        .chain(&files.verifying)
        .map(|path| read(path))
        .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn parse_all(files: &KeyFiles, bytes: &[Vec<u8>]) -> Result<KeySet, String> {
    let (signing, verifying) = bytes.split_first().ok_or("no signing key")?;
    let named = |path: &Path, e: String| format!("{}: {e}", path.display());
    let signing = UnsubscribeKey::new(signing).map_err(|e| named(&files.signing, e))?;
    let mut older = Vec::new();
    for (path, bytes) in files.verifying.iter().zip(verifying) {
        if bytes.trim_ascii().is_empty() {
            continue;
        }
        let key = UnsubscribeKey::new(bytes).map_err(|e| named(path, e))?;
        if key.id != signing.id && !older.iter().any(|k: &UnsubscribeKey| k.id == key.id) {
            older.push(key);
        }
    }
    if older.len() > MAX_VERIFICATION_KEYS {
        return Err(format!(
            "{} verification keys; at most {MAX_VERIFICATION_KEYS} are kept",
            older.len()
        ));
    }
    Ok(KeySet {
        signing,
        verifying: older,
    })
}

/// A short digest of the token: what the removal's audit annotation records.
pub fn token_id(token: &str) -> String {
    let sum = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    sum.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        let named = |ns: &str, name: &str| Named {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        };
        Target {
            contact: named("people", "ada"),
            group: named("groups", "news"),
        }
    }

    fn key(byte: u8) -> UnsubscribeKey {
        UnsubscribeKey::new(&[byte; 32]).unwrap()
    }

    #[test]
    fn tokens_carry_their_key_id_and_verify_only_with_their_key_and_unaltered() {
        let keys = UnsubscribeKeys::single(key(7));
        let token = mint(&key(7), &target());
        assert!(token.starts_with(&format!("{}.", key(7).id())), "{token}");
        assert_eq!(token.matches('.').count(), 2);
        assert_eq!(verify(&keys, &token), Some(target()));
        assert_eq!(verify(&UnsubscribeKeys::single(key(8)), &token), None);
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let (id, _) = signed.split_once('.').unwrap();
        let mut forged = target();
        forged.group.name = "offers".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let altered = format!("{id}.{forged_payload}.{signature}");
        assert_eq!(verify(&keys, &altered), None, "altered payload");
        let other_id = format!("{}.{}", key(8).id(), &token[id.len() + 1..]);
        assert_eq!(verify(&keys, &other_id), None, "another key id");
        assert_eq!(verify(&keys, signed), None, "no signature");
        assert_eq!(verify(&keys, "garbage"), None);
        let long = format!("{token}{}", "A".repeat(MAX_TOKEN_BYTES));
        assert_eq!(verify(&keys, &long), None, "too long");
        assert!(
            link("https://mail.example.com/", &keys, &target())
                .starts_with("https://mail.example.com/unsubscribe/")
        );
    }

    #[test]
    fn a_rotated_key_still_verifies_the_links_it_signed() {
        let (old, new) = (key(1), key(2));
        let sent = mint(&old, &target());
        let legacy = mint_without_key_id(&old, &target());
        let rotated = UnsubscribeKeys::new(new.clone(), vec![old.clone()]);
        assert_eq!(verify(&rotated, &sent), Some(target()), "by key id");
        assert_eq!(
            verify(&rotated, &legacy),
            Some(target()),
            "no key id: tried"
        );
        let fresh = link("https://m.example", &rotated, &target());
        assert!(
            fresh.contains(&format!("/unsubscribe/{}.", new.id())),
            "{fresh}"
        );
        let dropped = UnsubscribeKeys::single(new);
        assert_eq!(verify(&dropped, &sent), None, "the old key is gone");
        assert_eq!(verify(&dropped, &legacy), None);
        assert_eq!(
            verify(&UnsubscribeKeys::single(old), &legacy),
            Some(target()),
            "tokens without a key id verify against the signing key"
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(UnsubscribeKey::new(b"short\n").is_err());
        assert!(UnsubscribeKey::new(&[1; 40]).is_ok());
        assert_ne!(key(1).id(), key(2).id());
        assert_eq!(key(1).id().len(), 8);
    }

    /// Kubelet-style: a new timestamped directory, `..data` swapped to it by a rename.
    #[cfg(unix)]
    fn publish(dir: &Path, stamp: &str, files: &[(&str, &[u8])]) {
        use std::os::unix::fs::symlink;
        std::fs::create_dir(dir.join(stamp)).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(stamp).join(name), bytes).unwrap();
            let link = dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{name}"), &link).unwrap();
            }
        }
        symlink(stamp, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_reread_on_a_symlink_swap_and_bad_keys_are_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        publish(d, "..1", &[("current", &[1; 32]), ("previous", b"")]);
        let files = KeyFiles {
            signing: d.join("current"),
            verifying: vec![d.join("previous")],
        };
        let keys = UnsubscribeKeys::load(files).unwrap();
        let sent = mint(&key(1), &target());
        assert_eq!(
            keys.current().verifying.len(),
            0,
            "an empty file holds no key"
        );
        assert_eq!(keys.reload_if_changed(), ReloadOutcome::Unchanged);
        // Rotation: the new key signs, the old one still verifies.
        publish(d, "..2", &[("current", &[2; 32]), ("previous", &[1; 32])]);
        assert_eq!(keys.reload_if_changed(), ReloadOutcome::Reloaded);
        assert_eq!(keys.current().signing.id(), key(2).id());
        assert_eq!(verify(&keys, &sent), Some(target()));
        // A short key is reported once and not taken.
        publish(d, "..3", &[("current", b"short"), ("previous", &[1; 32])]);
        assert!(
            matches!(keys.reload_if_changed(), ReloadOutcome::Failed(e) if e.contains("current"))
        );
        assert_eq!(keys.reload_if_changed(), ReloadOutcome::Unchanged);
        assert_eq!(keys.current().signing.id(), key(2).id(), "kept");
    }
}

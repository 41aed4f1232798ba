//! Auth stage: a public key the client proved it holds becomes a `Principal`, or
//! nothing. Keys are looked up by SHA-256 fingerprint on every attempt, so a deleted
//! key stops opening connections at once.

use russh::keys::{Algorithm, PublicKey};

use crate::control::{Credential, Principal};
use crate::keys::{check_policy, fingerprint};
use crate::store::Store;

/// Where auth finds keys. The store implements it; tests may too.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn principal_for(&self, fingerprint: &str) -> Result<Option<Principal>, String>;
}

#[async_trait::async_trait]
impl KeyStore for Store {
    async fn principal_for(&self, fingerprint: &str) -> Result<Option<Principal>, String> {
        let Some(login) = self
            .login_by_fingerprint(fingerprint)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        Ok(Some(Principal::new(
            login.user_id,
            login.user_name,
            Credential::Key {
                id: login.key_id,
                fingerprint: fingerprint.to_owned(),
            },
        )))
    }
}

/// Why a key was not accepted; only ever logged, the client just sees a rejection.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `ssh-rsa` signatures use SHA-1.
    Sha1Signature,
    Policy(String),
    UnknownKey,
    StoreFailed(String),
}

/// `ssh-rsa` signatures use SHA-1 and are refused; every other accepted key type signs
/// with SHA-2 or EdDSA.
pub fn check_signature_algorithm(algorithm: &Algorithm) -> bool {
    *algorithm != (Algorithm::Rsa { hash: None })
}

/// Keys (by SHA-256 fingerprint) that passed the key policy. The verdict is a pure
/// function of the key's bytes, and the Ed25519 torsion check alone costs about as
/// much as a signature verification, paid on every login and offer otherwise.
static POLICY_PASSED: PassedKeys = PassedKeys(std::sync::LazyLock::new(Default::default));

struct PassedKeys(std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<String>>>);

impl PassedKeys {
    /// Remembered at most; past it the memory starts over (it is only a cache).
    const MAX: usize = 16_384;

    fn contains(&self, fingerprint: &str) -> bool {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.contains(fingerprint)
    }

    fn insert(&self, fingerprint: String) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= Self::MAX {
            set.clear();
        }
        set.insert(fingerprint);
    }
}

/// Checks the algorithm and policy and finds the key's owner.
pub async fn authenticate(
    keys: &dyn KeyStore,
    key: &PublicKey,
    signature_algorithm: &Algorithm,
) -> Result<Principal, Refusal> {
    if !check_signature_algorithm(signature_algorithm) {
        return Err(Refusal::Sha1Signature);
    }
    let fingerprint = fingerprint(key);
    if !POLICY_PASSED.contains(&fingerprint) {
        check_policy(key).map_err(|e| Refusal::Policy(e.to_string()))?;
        POLICY_PASSED.insert(fingerprint.clone());
    }
    match keys.principal_for(&fingerprint).await {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(Refusal::UnknownKey),
        Err(e) => Err(Refusal::StoreFailed(e)),
    }
}

/// Whether the key behind `who` still identifies the same user: checked before every
/// new channel, so deleting a key refuses the next channel of a connection it opened.
pub async fn still_valid(keys: &dyn KeyStore, who: &Principal) -> Result<bool, String> {
    let Credential::Key { id, fingerprint } = who.credential() else {
        return Ok(false);
    };
    Ok(keys
        .principal_for(fingerprint)
        .await?
        .is_some_and(|now| now.user_id() == who.user_id() && now.key_id() == Some(id)))
}

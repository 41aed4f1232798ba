//! Auth stage: a public key the client proved it holds becomes a `Principal`, or
//! nothing. Keys are looked up by SHA-256 fingerprint on every attempt, so a deleted
//! key stops opening connections at once. Certificates are judged by `certs::check`,
//! then their user is looked up the same way.

use std::net::IpAddr;

use russh::keys::{Algorithm, Certificate, PublicKey};

use crate::certs::{self, CertClaims, CertRefusal, Issuer, Trust};
use crate::control::{Credential, Principal};
use crate::keys::{check_policy, fingerprint};
use crate::store::{Store, StoreError};

/// Where auth finds keys. The store implements it; tests may too.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn principal_for(&self, fingerprint: &str) -> Result<Option<Principal>, String>;
    /// The user an accepted certificate names, as the store knows them now: for the
    /// gateway's own certificates, only while the certificate is on record for a key
    /// with the certified fingerprint and the same user; for a configured CA's, the
    /// user with the principal's name.
    /// A store that keeps no certificates knows no certificate's user.
    async fn principal_for_certificate(
        &self,
        _claims: &CertClaims,
    ) -> Result<Option<Principal>, String> {
        Ok(None)
    }
    /// Whether the API token `token_id` is still `user_id`'s (a browser terminal's
    /// login). A store that keeps no tokens knows none.
    async fn token_is_current(&self, _token_id: &str, _user_id: &str) -> Result<bool, String> {
        Ok(false)
    }
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

    async fn token_is_current(&self, token_id: &str, user_id: &str) -> Result<bool, String> {
        Store::token_is_current(self, token_id, user_id)
            .await
            .map_err(|e| e.to_string())
    }

    async fn principal_for_certificate(
        &self,
        claims: &CertClaims,
    ) -> Result<Option<Principal>, String> {
        let (user_id, user_name, key_id) = match &claims.issuer {
            Issuer::Own => {
                let Some(login) = self
                    .certificate_login(claims.serial, &claims.key_fingerprint, &claims.principal)
                    .await
                    .map_err(|e| e.to_string())?
                else {
                    return Ok(None);
                };
                (login.user_id, login.user_name, Some(login.key_id))
            }
            Issuer::External(_) => match self.user_by_name(&claims.principal).await {
                Ok(user) => (user.id, user.name, None),
                Err(StoreError::NotFound) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            },
        };
        Ok(Some(Principal::with_permits(
            user_id,
            user_name,
            Credential::Certificate {
                serial: claims.serial,
                issuer: claims.issuer.clone(),
                key_id,
                fingerprint: claims.key_fingerprint.clone(),
            },
            claims.permits,
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
    Certificate(CertRefusal),
    /// A well-formed certificate from a trusted CA whose user (or, for the gateway's
    /// own, whose key or record) is gone.
    CertificateRevoked,
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

/// Checks a certificate the client proved it holds and finds the user it names.
/// `client` is the connection's source (the PROXY-protocol one when present), for
/// `source-address`.
pub async fn authenticate_certificate(
    keys: &dyn KeyStore,
    trust: &Trust,
    cert: &Certificate,
    signature_algorithm: &Algorithm,
    client: IpAddr,
) -> Result<Principal, Refusal> {
    if !check_signature_algorithm(signature_algorithm) {
        return Err(Refusal::Sha1Signature);
    }
    let claims =
        certs::check(cert, certs::unix_now(), client, trust).map_err(Refusal::Certificate)?;
    let key = PublicKey::new(cert.public_key().clone(), "");
    let fingerprint = claims.key_fingerprint.clone();
    if !POLICY_PASSED.contains(&fingerprint) {
        check_policy(&key).map_err(|e| Refusal::Policy(e.to_string()))?;
        POLICY_PASSED.insert(fingerprint);
    }
    match keys.principal_for_certificate(&claims).await {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(Refusal::CertificateRevoked),
        Err(e) => Err(Refusal::StoreFailed(e)),
    }
}

/// Whether the credential behind `who` still identifies the same user: checked before
/// every new channel, so deleting a key (or the key a certificate was issued for, or
/// a certificate's user) refuses the next channel of a connection it opened.
pub async fn still_valid(keys: &dyn KeyStore, who: &Principal) -> Result<bool, String> {
    match who.credential() {
        Credential::Key { id, fingerprint } => Ok(keys
            .principal_for(fingerprint)
            .await?
            .is_some_and(|now| now.user_id() == who.user_id() && now.key_id() == Some(id))),
        Credential::Certificate {
            serial,
            issuer,
            fingerprint,
            ..
        } => {
            let claims = CertClaims {
                issuer: issuer.clone(),
                serial: *serial,
                principal: who.user_name().to_owned(),
                permits: who.permits(),
                key_fingerprint: fingerprint.clone(),
                key_id: String::new(),
            };
            Ok(keys
                .principal_for_certificate(&claims)
                .await?
                .is_some_and(|now| now.user_id() == who.user_id()))
        }
        Credential::ApiToken { id } => keys.token_is_current(id, who.user_id()).await,
    }
}

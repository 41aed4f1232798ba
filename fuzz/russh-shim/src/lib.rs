//! `russh::keys` as russh exports it: ssh-key and its key types.
pub mod keys {
    pub use ssh_key::{self, Algorithm, Certificate, EcdsaCurve, HashAlg, PrivateKey, PublicKey};
}

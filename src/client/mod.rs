//! The user's side: `ssh-gateway setup` (a key, a certificate or a registered key,
//! known hosts, and one block in ~/.ssh/config), `ssh-gateway refresh` (a certificate
//! renewed before OpenSSH reads it) and the profile `ssh-gateway proxy` reads to know
//! which front to dial.

pub mod setup;
pub mod sshconfig;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// One gateway (domain) the user set up, in `<dir>/<domain>.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub domain: String,
    /// The gateway's API, for certificate renewals.
    pub api: String,
    /// How `proxy` reaches the gateway: `tls://host:port` or `connect://host:port`.
    pub front: String,
    /// A CA file for the TLS front and API, instead of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    pub identity_file: PathBuf,
    /// Present when the gateway issues certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<PathBuf>,
    /// The API token renewals use (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// How `proxy` reaches a front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontAddr {
    Tls(String),
    Connect(String),
}

impl FrontAddr {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (scheme, addr) = url.split_once("://").with_context(|| {
            format!("front {url:?}: expected tls://host:port or connect://host:port")
        })?;
        let addr = addr.trim_end_matches('/');
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            bail!("front {url:?}: expected host:port after {scheme}://");
        }
        match scheme {
            "tls" => Ok(FrontAddr::Tls(addr.to_owned())),
            "connect" => Ok(FrontAddr::Connect(addr.to_owned())),
            _ => bail!("front {url:?}: the scheme must be tls:// or connect://"),
        }
    }
}

/// `~/.ssh/ssh-gateway`, from $HOME.
pub fn default_dir() -> anyhow::Result<PathBuf> {
    Ok(home()?.join(".ssh").join("ssh-gateway"))
}

pub fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set")
}

pub fn profile_path(dir: &Path, domain: &str) -> PathBuf {
    dir.join(format!("{domain}.toml"))
}

/// The profile whose domain `host` is under (the longest such domain), if any.
pub fn profile_for_host(dir: &Path, host: &str) -> anyhow::Result<Option<Profile>> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut best: Option<Profile> = None;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let profile: Profile = toml::from_str(&text)
            .with_context(|| format!("{} is not a profile", path.display()))?;
        let under = host == profile.domain || host.ends_with(&format!(".{}", profile.domain));
        if under
            && best
                .as_ref()
                .is_none_or(|b| b.domain.len() < profile.domain.len())
        {
            best = Some(profile);
        }
    }
    Ok(best)
}

/// Writes `contents` to `path` through a temporary file and a rename, so a reader
/// (OpenSSH, another `refresh`) sees the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// The API, as the client side calls it.
pub struct Api {
    base: String,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
pub struct GatewayInfo {
    pub domain: Option<String>,
    pub host_keys: Vec<String>,
    pub user_ca: Option<String>,
    #[serde(default)]
    pub fronts: Fronts,
}

#[derive(Debug, Default, Deserialize)]
pub struct Fronts {
    pub tls: Option<String>,
    pub connect: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct IssuedCertificate {
    pub certificate: String,
}

impl Api {
    pub fn new(base: &str, tls_ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            bail!("--api {base:?}: expected an http(s):// URL");
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls_client::config(tls_ca_file)?)
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { base, http })
    }

    async fn check(resp: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
        bail!("{what}: the gateway answered {status}: {message}")
    }

    pub async fn info(&self) -> anyhow::Result<GatewayInfo> {
        let resp = self
            .http
            .get(format!("{}/api/v1/ssh/gateway", self.base))
            .send()
            .await
            .with_context(|| format!("reaching the gateway's API at {}", self.base))?;
        Ok(Self::check(resp, "asking for the gateway's details")
            .await?
            .json()
            .await?)
    }

    pub async fn certificate(&self, token: &str, public_key: &str) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!("{}/users/me/ssh-certificates", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({"public_key": public_key}))
            .send()
            .await
            .with_context(|| format!("reaching the gateway's API at {}", self.base))?;
        let issued: IssuedCertificate = Self::check(resp, "asking for a certificate")
            .await?
            .json()
            .await?;
        Ok(issued.certificate)
    }

    /// Registers the key; one already registered to the caller is fine.
    pub async fn register_key(
        &self,
        token: &str,
        name: &str,
        public_key: &str,
    ) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/users/me/ssh-keys", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": name, "public_key": public_key}))
            .send()
            .await
            .with_context(|| format!("reaching the gateway's API at {}", self.base))?;
        if resp.status() == reqwest::StatusCode::CONFLICT {
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let message = body["error"]["message"].as_str().unwrap_or("");
            if message.contains("already registered to your account") {
                return Ok(());
            }
            bail!("registering the key: {message}");
        }
        Self::check(resp, "registering the key").await?;
        Ok(())
    }
}

/// Renew certificates this long before they expire (or sooner, for short ones: at a
/// quarter of their life left).
const RENEW_MARGIN: Duration = Duration::from_secs(10 * 60);

/// Whether the certificate at `path` is missing, unreadable, or near its end.
pub fn needs_renewal(path: &Path) -> bool {
    let Ok(cert) = russh::keys::Certificate::read_file(path) else {
        return true;
    };
    let now = crate::certs::unix_now();
    let life = cert.valid_before().saturating_sub(cert.valid_after());
    let margin = RENEW_MARGIN.as_secs().min(life / 4);
    now.saturating_add(margin) >= cert.valid_before()
}

/// `ssh-gateway refresh HOST`: renews the certificate of the profile HOST is under,
/// when it is near its end. Run by OpenSSH (`Match exec`) before it reads the
/// certificate, so every connection starts with a valid one.
pub async fn refresh(dir: &Path, host: &str) -> anyhow::Result<bool> {
    let Some(profile) = profile_for_host(dir, host)? else {
        return Ok(false);
    };
    let (Some(cert_file), Some(token_file)) = (&profile.certificate_file, &profile.token_file)
    else {
        return Ok(false);
    };
    if !needs_renewal(cert_file) {
        return Ok(false);
    }
    renew(&profile, cert_file, token_file).await?;
    Ok(true)
}

pub async fn renew(profile: &Profile, cert_file: &Path, token_file: &Path) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading the API token {}", token_file.display()))?;
    let public = std::fs::read_to_string(public_path(&profile.identity_file))
        .with_context(|| format!("reading {}", public_path(&profile.identity_file).display()))?;
    let api = Api::new(&profile.api, profile.tls_ca_file.as_deref())?;
    let cert = api.certificate(token.trim(), public.trim()).await?;
    write_atomically(cert_file, format!("{cert}\n").as_bytes(), 0o644)
}

pub fn public_path(identity: &Path) -> PathBuf {
    let mut name = identity.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fronts_parse() {
        assert_eq!(
            FrontAddr::parse("tls://gw.example.com:443").unwrap(),
            FrontAddr::Tls("gw.example.com:443".into())
        );
        assert_eq!(
            FrontAddr::parse("connect://127.0.0.1:8022/").unwrap(),
            FrontAddr::Connect("127.0.0.1:8022".into())
        );
        for bad in [
            "gw:443",
            "ssh://gw:22",
            "tls://gw",
            "tls://:443",
            "tls://gw:http",
        ] {
            assert!(FrontAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_longest_matching_domain_wins() {
        let dir = tempfile::tempdir().unwrap();
        for domain in ["example.com", "ssh.example.com"] {
            let p = Profile {
                domain: domain.into(),
                api: "http://x".into(),
                front: "tls://x:1".into(),
                tls_ca_file: None,
                identity_file: "/k".into(),
                certificate_file: None,
                token_file: None,
            };
            std::fs::write(
                profile_path(dir.path(), domain),
                toml::to_string(&p).unwrap(),
            )
            .unwrap();
        }
        let hit = |h| profile_for_host(dir.path(), h).unwrap().map(|p| p.domain);
        assert_eq!(
            hit("demo.ssh.example.com").as_deref(),
            Some("ssh.example.com")
        );
        assert_eq!(
            hit("DEMO.SSH.example.com.").as_deref(),
            Some("ssh.example.com")
        );
        assert_eq!(hit("www.example.com").as_deref(), Some("example.com"));
        assert_eq!(hit("example.org"), None);
        assert_eq!(hit("badexample.com"), None);
    }
}

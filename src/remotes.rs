//! Which cluster a connection's route goes to: the gateway's main one (`[kubernetes]`,
//! or whatever control plane and backend it runs) and, with `[routing] remotes`, one
//! control plane and backend per remote (`[remotes.<name>]`). Authorization, wake,
//! activity, exec and port-forward of a route all go to the pair found here, so a
//! sandbox id means one thing per remote and nothing crosses between them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::Backend;
use crate::control::ControlPlane;
use crate::route::split_key;

/// One cluster's control plane and backend, as every connection to it uses them.
#[derive(Clone)]
pub struct Cluster {
    pub control: Arc<dyn ControlPlane>,
    pub backend: Arc<dyn Backend>,
}

/// The default cluster and the named remotes.
pub struct Remotes {
    default: Cluster,
    named: HashMap<String, Cluster>,
}

impl Remotes {
    pub fn new(default: Cluster) -> Self {
        Self {
            default,
            named: HashMap::new(),
        }
    }

    pub fn insert(&mut self, name: &str, cluster: Cluster) {
        self.named.insert(name.to_owned(), cluster);
    }

    /// The default cluster (`None`) or a named remote's; `None` for a remote that is
    /// not configured (routing refuses those first, so only a bug gets here).
    pub fn get(&self, remote: Option<&str>) -> Option<&Cluster> {
        match remote {
            None => Some(&self.default),
            Some(name) => self.named.get(name),
        }
    }

    /// The cluster a `Route::key` (as connection events carry it) is on, and the
    /// target's name there.
    pub fn for_key<'k>(&self, key: &'k str) -> Option<(&Cluster, &'k str)> {
        let (remote, name) = split_key(key);
        Some((self.get(remote)?, name))
    }
}

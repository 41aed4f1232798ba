//! ssh-gateway: an SSH gateway into sandboxes and training jobs. A connection flows
//! through the stages in this order (see DESIGN.md): `ssh` (transport, auth) →
//! `route` → `control` (authorize, locate) → `backend` (run) → `bridge` (copy bytes).

pub mod api;
pub mod app;
pub mod audit;
pub mod backend;
pub mod bridge;
pub mod certs;
pub mod client;
pub mod config;
pub mod conn;
pub mod control;
pub mod dev;
pub mod helper;
pub mod keys;
pub mod kubernetes;
pub mod metrics;
pub mod proxy;
pub mod recording;
pub mod remotes;
pub mod route;
pub mod ssh;
pub mod store;
pub mod terminal;
pub mod tls_client;

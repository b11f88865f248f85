//! `ebb webhooks`: KEDA's validating admission webhooks (§14, §11.1) over TLS.
//!
//! The object checks are `scaling::validate`, the same code `ebb check` runs; [`review`] adds
//! the checks that read the cluster, behind [`cluster::ClusterView`] so they run against a kube
//! client, a directory of YAML (`--local`), or a test double; [`server`] serves them.

pub mod cluster;
pub mod review;
pub mod server;

pub use cluster::{ClusterError, ClusterView, KubeCluster, LocalCluster};
pub use review::{ReviewError, WebhookContext, review};
pub use server::{
    CLUSTER_TRIGGER_AUTHENTICATION_PATH, SCALED_JOB_PATH, SCALED_OBJECT_PATH, TRIGGER_AUTHENTICATION_PATH,
    handle, run,
};

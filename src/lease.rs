//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder reconciles and runs
//! scale loops. Leadership is published on a `watch` channel; seeing another holder (or failing
//! to renew before the deadline) flips it to false at once.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;
use tracing::{Instrument, info, warn};

use crate::shutdown::Signal;

/// Lease name, shared by every ebb operator replica.
pub const LEASE_NAME: &str = "ebb-operator";

/// Who competes for which Lease, and how often.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// `leaseDurationSeconds`.
    pub duration: Duration,
    /// How often the holder renews and others retry.
    pub renew_every: Duration,
    /// A holder that could not renew for this long steps down.
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    /// Lease `ebb-operator` in `namespace`; this replica is `pod_name`, else `hostname`, else
    /// what `/etc/hostname` says (the values the operator's command line read).
    pub fn for_replica(pod_name: Option<&str>, hostname: Option<&str>, namespace: String) -> Self {
        let identity = pod_name
            .filter(|s| !s.is_empty())
            .or(hostname.filter(|s| !s.is_empty()))
            .map(str::to_string)
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "ebb-operator".to_string());
        Self {
            name: LEASE_NAME.to_string(),
            namespace,
            identity,
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// Why a Lease step failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server refused or could not be reached.
    #[error("lease {action} failed")]
    Kube {
        /// get, create or update.
        action: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

impl LeaseError {
    /// Stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LeaseError::Kube { .. } => "kube",
        }
    }
}

fn micro(t: DateTime<Utc>) -> Option<MicroTime> {
    let nanos = i32::try_from(t.timestamp_subsec_nanos()).ok()?;
    k8s_openapi::jiff::Timestamp::new(t.timestamp(), nanos)
        .ok()
        .map(MicroTime)
}

fn chrono_of(t: &MicroTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), u32::try_from(t.0.subsec_nanosecond()).ok()?)
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(ae) if ae.code == 409)
}

/// One election step at `now`: create the Lease if missing, renew it if ours, take it over if
/// expired; returns whether this replica holds it afterwards. A lost race (409) is `Ok(false)`.
pub async fn try_acquire(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    now: DateTime<Utc>,
) -> Result<bool, LeaseError> {
    let duration_secs = i32::try_from(cfg.duration.as_secs()).unwrap_or(15);
    let existing = api.get_opt(&cfg.name).await.map_err(|source| LeaseError::Kube {
        action: "get",
        source,
    })?;
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: micro(now),
                renew_time: micro(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(source) => Err(LeaseError::Kube {
                action: "create",
                source,
            }),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder != cfg.identity {
        let held_for = spec.lease_duration_seconds.map_or(cfg.duration, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0))
        });
        let expired = spec
            .renew_time
            .as_ref()
            .and_then(chrono_of)
            .is_none_or(|renewed| renewed + held_for < now);
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = micro(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = micro(now);
    // Replace carries the resourceVersion we read, so two candidates cannot both win.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(e) if conflict(&e) => Ok(false),
        Err(source) => Err(LeaseError::Kube {
            action: "update",
            source,
        }),
    }
}

/// Runs the election until `shutdown`; the receiver says whether this replica leads now.
pub fn spawn(client: Client, cfg: LeaseConfig, shutdown: Signal) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    tokio::spawn(async move {
        let mut last_renewal: Option<Instant> = None;
        loop {
            match try_acquire(&api, &cfg, Utc::now()).await {
                Ok(true) => {
                    if last_renewal.is_none() {
                        info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
                    }
                    last_renewal = Some(Instant::now());
                    tx.send_if_modified(|l| !std::mem::replace(l, true));
                }
                Ok(false) => {
                    if last_renewal.take().is_some() {
                        warn!(identity = %cfg.identity, "lost the lease to another replica");
                    }
                    tx.send_if_modified(|l| std::mem::replace(l, false));
                }
                Err(e) => {
                    warn!(error = %e, label = e.metric_label(), "lease step failed");
                    if last_renewal.is_some_and(|t| t.elapsed() > cfg.renew_deadline) {
                        warn!(identity = %cfg.identity, "lease not renewed before the deadline; stepping down");
                        last_renewal = None;
                        tx.send_if_modified(|l| std::mem::replace(l, false));
                    }
                }
            }
            tokio::select! {
                _ = shutdown.wait() => {
                    tx.send_if_modified(|l| std::mem::replace(l, false));
                    return;
                }
                _ = tokio::time::sleep(cfg.renew_every) => {}
            }
        }
    }.in_current_span());
    rx
}

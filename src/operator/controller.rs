//! `ebb operator`: the client, the engine, KEDA's metrics on the admin port, leader election,
//! and the ScaledObject Controller with the (Cluster)TriggerAuthentication controllers.
//!
//! ```text
//! lease --leader: bool--> run_gated --starts/aborts--> Controller(ScaledObject, owns HPA)
//!                                                          \--reconcile--> scale loops
//! ```

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{
    Api, Client, Resource,
    core::DeserializeGuard,
    runtime::{Controller, WatchStreamExt, controller::Action, reflector, watcher},
};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, warn};

use super::{
    context::Context,
    error::Error,
    reconcile::{error_policy, reconcile},
    trigger_auth::{self, AuthContext},
    watch::{changes_only, reconcile_key},
};
use crate::{
    admin::{self, AdminState},
    cli::{LeaderArgs, OperatorArgs},
    cluster_certs::CertManager,
    crd::{ClusterTriggerAuthentication, ScaledObject, TriggerAuthentication},
    engine::Engine,
    keda_metrics::KedaMetrics,
    lease::{self, LeaseConfig},
    shutdown::Signal,
    startup::{self, StartupError},
};

/// `ebb operator`: runs the operator on an engine of its own until `shutdown`.
pub async fn run(args: OperatorArgs, shutdown: Signal) -> Result<(), StartupError> {
    let client = crate::cluster::client(args.kubeconfig.as_deref()).await?;
    let mut prom = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(KedaMetrics::register(&mut prom));
    let admin_addr = SocketAddr::new(args.metrics_bind_address, args.metrics_port);
    let admin_listener = startup::bind_admin(admin_addr).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let admin_state = Arc::new(AdminState {
        registry: prom,
        ready: ready.clone(),
        demo: false,
        debug: None,
    });
    tokio::spawn(admin::run(admin_listener, admin_state, shutdown.clone()).in_current_span());

    let (engine, _pods) = Engine::connect(
        &client,
        args.scalers.http_timeout(),
        crate::resolver::cluster_object_namespace(
            args.scalers.cluster_objects.cluster_object_namespace.as_deref(),
        ),
        metrics.clone(),
        crate::scalers::http_push::ActivatorDiscovery {
            admin_urls: args.scalers.activator.admin.clone(),
            service: args.scalers.activator.service.clone(),
        },
        &shutdown,
    )
    .await;
    ready.store(true, Ordering::Relaxed);
    run_with_engine(
        client,
        engine,
        metrics,
        args.leader.clone(),
        crate::cli::watch_namespace(args.watch_namespace.as_deref()),
        shutdown,
    )
    .await;
    Ok(())
}

/// Runs the controller, scale loops, leader election and certificate rotation on an engine
/// whose registry is already configured ([`Engine::connect`]): by [`run`], or beside the
/// metrics server under `ebb run`.
pub async fn run_with_engine(
    client: Client,
    engine: Engine,
    metrics: Arc<KedaMetrics>,
    options: LeaderArgs,
    namespace: Option<String>,
    shutdown: Signal,
) {
    let mut ctx =
        Context::new(client.clone(), engine.registry, engine.cache).reporting_as(options.pod.name.clone());
    ctx.health = engine.health;
    ctx.metrics = Some(metrics);
    ctx.http_scaler_address = options.http_scaler_address.clone();
    let ctx = Arc::new(ctx);
    // Keeps the always-leader channel open when election is off.
    let (_always, always_rx) = watch::channel(true);
    let leader = if options.leader_elect {
        let config = LeaseConfig::for_replica(
            options.pod.name.as_deref(),
            options.pod.hostname.as_deref(),
            options.pod.namespace(),
        );
        lease::spawn(client, config, shutdown.clone())
    } else {
        always_rx
    };
    let certs = options.enable_cert_rotation.then(|| {
        let namespace = options.pod.namespace();
        Arc::new(move |client: kube::Client| CertManager::new(client, &namespace))
            as Arc<dyn Fn(kube::Client) -> CertManager + Send + Sync>
    });
    run_gated(ctx, leader, namespace, certs, shutdown).await;
}

/// How often the leader re-checks the serving certificate (KEDA: 12 h).
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(12 * 60 * 60);

/// Runs the Controller only while `leader` is true; on losing the lease the Controller and every
/// scale loop are aborted at once, so a non-leader never writes.
pub async fn run_gated(
    ctx: Arc<Context>,
    mut leader: watch::Receiver<bool>,
    namespace: Option<String>,
    certs: Option<Arc<dyn Fn(kube::Client) -> CertManager + Send + Sync>>,
    shutdown: Signal,
) {
    loop {
        let leading = tokio::select! {
            _ = shutdown.wait() => return,
            r = leader.wait_for(|l| *l) => r.is_ok(),
        };
        if !leading {
            return;
        }
        info!("leading: starting the ScaledObject controller");
        // Certificate writes are the leader's too; the task ends with the leadership.
        let cert_task = certs.as_ref().map(|make| {
            tokio::spawn(
                make(ctx.client.clone())
                    .run(CERT_CHECK_INTERVAL)
                    .in_current_span(),
            )
        });
        let controller = controller(ctx.clone(), namespace.clone());
        tokio::select! {
            _ = shutdown.wait() => {
                if let Some(t) = &cert_task {
                    t.abort();
                }
                ctx.stop_all_loops();
                return;
            }
            _ = leader.wait_for(|l| !*l) => warn!("leadership lost: stopping the controller and scale loops"),
            _ = controller => warn!("controller stopped"),
        }
        if let Some(t) = cert_task {
            t.abort();
        }
        ctx.stop_all_loops();
    }
}

fn controller(ctx: Arc<Context>, namespace: Option<String>) -> impl std::future::Future<Output = ()> {
    let client = ctx.client.clone();
    let (objects, hpas): (Api<DeserializeGuard<ScaledObject>>, Api<HorizontalPodAutoscaler>) =
        match &namespace {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
            None => (Api::all(client.clone()), Api::all(client)),
        };
    let (reader, writer) = reflector::store();
    let scaled_objects = watcher(objects, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let hpas = watcher(hpas, watcher::Config::default()).default_backoff();
    let auth = Arc::new(AuthContext::new(ctx.clone()));
    let (http_client, http_namespace) = (ctx.client.clone(), namespace.clone());
    let http_scaler_address = ctx.http_scaler_address.clone();
    let scaled_objects = Controller::for_stream(
        changes_only(scaled_objects, reconcile_key::<ScaledObject>),
        reader,
    )
    .owns_stream(changes_only(hpas, hpa_key))
    .run(reconcile_guarded, error_policy_guarded, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            debug!(error = %e, "reconcile error");
        }
    });
    // KEDA runs the ScaledJob and (Cluster)TriggerAuthentication controllers beside the
    // ScaledObject one; ScaledJob scalers are built as the ScaledObjects' are.
    let mut jobs =
        super::scaled_job::JobContext::new(ctx.client.clone(), ctx.registry.config(), ctx.metrics.clone());
    jobs.clock = ctx.clock.clone();
    let scaled_jobs = super::scaled_job::run(Arc::new(jobs), namespace.clone());
    async move {
        tokio::join!(
            scaled_objects,
            scaled_jobs,
            super::http_scaled_object::run(http_client, http_namespace, http_scaler_address),
            trigger_auth::run::<TriggerAuthentication>(auth.clone(), namespace),
            trigger_auth::run::<ClusterTriggerAuthentication>(auth, None),
        );
    }
}

/// An owned HPA matters when its spec (generation), labels or annotations changed; the HPA
/// controller's status updates every sync period do not (KEDA's predicate on owned HPAs).
fn hpa_key(hpa: &HorizontalPodAutoscaler) -> u64 {
    let m = hpa.meta();
    crate::hash::fnv1a(&serde_json::to_vec(&(m.generation, &m.labels, &m.annotations)).unwrap_or_default())
}

/// A ScaledObject that does not deserialise is logged and skipped, never retried in a loop.
async fn reconcile_guarded(
    obj: Arc<DeserializeGuard<ScaledObject>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    match &obj.0 {
        Ok(so) => reconcile(Arc::new(so.clone()), ctx).await,
        Err(bad) => {
            warn!(
                scaledobject = %format!("{}/{}", bad.metadata.namespace.clone().unwrap_or_default(), bad.metadata.name.clone().unwrap_or_default()),
                error = %bad.error,
                "skipping malformed ScaledObject"
            );
            Ok(Action::await_change())
        }
    }
}

fn error_policy_guarded(
    obj: Arc<DeserializeGuard<ScaledObject>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    match &obj.0 {
        Ok(so) => error_policy(Arc::new(so.clone()), error, ctx),
        Err(_) => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn so(generation: i64, status_rv: &str, paused: bool) -> DeserializeGuard<ScaledObject> {
        let mut v = serde_json::json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "generation": generation, "resourceVersion": status_rv},
            "spec": {"scaleTargetRef": {"name": "t"}, "triggers": []},
            "status": {"lastActiveTime": status_rv}
        });
        if paused {
            v["metadata"]["annotations"] = serde_json::json!({"autoscaling.keda.sh/paused": "true"});
        }
        serde_json::from_value(v).expect("ScaledObject")
    }

    /// The resourceVersions `changes_only` lets through.
    async fn passed<K: Resource + Send + 'static>(
        events: Vec<Result<watcher::Event<K>, watcher::Error>>,
        key: fn(&K) -> u64,
    ) -> Vec<String> {
        changes_only(futures::stream::iter(events), key)
            .map(|r| r.map(|o| o.meta().resource_version.clone().unwrap_or_default()))
            .map(|r| r.expect("no error"))
            .collect()
            .await
    }

    #[tokio::test]
    async fn status_only_changes_do_not_trigger_a_reconcile() {
        let events = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(so(1, "1", false))),
            Ok(watcher::Event::InitDone),
            // ebb's own status patch: same generation, annotations, labels.
            Ok(watcher::Event::Apply(so(1, "2", false))),
            Ok(watcher::Event::Apply(so(1, "3", true))),
            Ok(watcher::Event::Apply(so(2, "4", true))),
            Ok(watcher::Event::Apply(so(2, "5", true))),
            Ok(watcher::Event::Delete(so(2, "5", true))),
        ];
        let passed = passed(events, reconcile_key::<ScaledObject>).await;
        assert_eq!(passed, ["1", "3", "4", "5"]);
    }

    #[tokio::test]
    async fn hpa_status_updates_are_ignored_but_deletion_is_not() {
        let hpa = |generation: i64, rv: &str| -> HorizontalPodAutoscaler {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "keda-hpa-a", "namespace": "ns", "uid": "h1", "generation": generation, "resourceVersion": rv},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "t"}, "maxReplicas": 3},
                "status": {"currentReplicas": 1, "desiredReplicas": 1}
            }))
            .expect("HPA")
        };
        let events = vec![
            Ok(watcher::Event::Apply(hpa(1, "1"))),
            Ok(watcher::Event::Apply(hpa(1, "2"))),
            Ok(watcher::Event::Apply(hpa(1, "3"))),
            Ok(watcher::Event::Delete(hpa(1, "3"))),
            Ok(watcher::Event::Apply(hpa(1, "9"))),
        ];
        let passed = passed(events, hpa_key).await;
        // The recreated HPA (after the deletion) counts as new.
        assert_eq!(passed, ["1", "3", "9"]);
    }
}

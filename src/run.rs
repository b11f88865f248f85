//! `ebb run`: the metrics server and the operator in one process, side by side on one engine,
//! so an HPA read and the scale loop meet in the same cache and the same fallback counters, as
//! KEDA's operator-side `GetMetrics` does, without KEDA's gRPC hop.
//!
//! This is the only module that starts more than one component; the components never start
//! each other. A new component that should run under `ebb run` (the activator) is started here.
//!
//! ```text
//! run ── bind ports ── client ── Engine::connect ─┬─ operator::controller::run_with_engine
//!                                                 └─ external_metrics::server::run_with_engine
//! ```

use tracing::{Instrument, info_span};

use crate::{
    cli::RunArgs,
    engine::Engine,
    external_metrics::server::{self, Cluster, Metrics},
    operator,
    shutdown::Signal,
    startup::StartupError,
};

/// Runs both components until `shutdown`, on a client built from the kubeconfig.
pub async fn run(args: RunArgs, shutdown: Signal) -> Result<(), StartupError> {
    run_on(args, None, shutdown).await
}

/// [`run`] on a given client (tests drive it with a scripted API server).
pub async fn run_with_client(
    args: RunArgs,
    client: kube::Client,
    shutdown: Signal,
) -> Result<(), StartupError> {
    run_on(args, Some(client), shutdown).await
}

/// The ports first, so a port in use fails before the cluster is contacted.
async fn run_on(args: RunArgs, client: Option<kube::Client>, shutdown: Signal) -> Result<(), StartupError> {
    if args.server.local.is_some() {
        return Err(StartupError::RunNeedsCluster);
    }
    let listeners = server::bind(&args.server).await?;
    let client = match client {
        Some(c) => c,
        None => crate::cluster::client(args.server.kubeconfig.as_deref()).await?,
    };
    let metrics = Metrics::register();
    let (engine, pods) = Engine::connect(
        &client,
        args.server.scalers.http_timeout(),
        crate::resolver::cluster_object_namespace(
            args.server
                .scalers
                .cluster_objects
                .cluster_object_namespace
                .as_deref(),
        ),
        metrics.keda.clone(),
        crate::engine::ActivatorDiscovery {
            admin_urls: args.server.scalers.activator.admin.clone(),
            service: args.server.scalers.activator.service.clone(),
        },
        &shutdown,
    )
    .await;
    tokio::spawn(
        operator::controller::run_with_engine(
            client.clone(),
            engine.clone(),
            metrics.keda.clone(),
            args.leader,
            crate::cli::watch_namespace(args.server.watch_namespace.as_deref()),
            shutdown.clone(),
        )
        .instrument(info_span!("operator")),
    );
    server::run_with_engine(
        args.server,
        listeners,
        metrics,
        Cluster { client, engine, pods },
        shutdown,
    )
    .await
}

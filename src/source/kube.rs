//! ScaledObjects from the cluster through a kube watch; a malformed object is logged and skipped.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures::StreamExt;
use kube::{
    Api, Client,
    core::DeserializeGuard,
    runtime::{WatchStreamExt, watcher},
};
use tracing::{info, warn};

use crate::{
    crd::ScaledObject,
    scalers::registry::{ObjectKey, Registry, object_key},
    shutdown::Signal,
};

/// Watches ScaledObjects (all namespaces, or one) until `shutdown`, feeding `registry`.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
    shutdown: Signal,
) {
    let api: Api<DeserializeGuard<ScaledObject>> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut buffer: Vec<ScaledObject> = Vec::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.wait() => return,
            e = stream.next() => e,
        };
        let Some(event) = event else { return };
        match event {
            Ok(watcher::Event::Init) => buffer.clear(),
            Ok(watcher::Event::InitApply(obj)) => {
                if let Some(so) = accept(obj) {
                    buffer.push(so);
                }
            }
            Ok(watcher::Event::InitDone) => {
                info!(scaledobjects = buffer.len(), "ScaledObjects listed");
                registry.replace_all(&buffer);
                buffer.clear();
                ready.store(true, Ordering::Relaxed);
            }
            Ok(watcher::Event::Apply(obj)) => {
                if let Some(so) = accept(obj) {
                    registry.apply(&so);
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                let key = match &obj.0 {
                    Ok(so) => object_key(so),
                    Err(bad) => ObjectKey::new(
                        bad.metadata.namespace.clone().unwrap_or_default(),
                        bad.metadata.name.clone().unwrap_or_default(),
                    ),
                };
                registry.remove(&key);
            }
            Err(e) => warn!(error = %e, "ScaledObject watch failed; retrying"),
        }
    }
}

fn accept(obj: DeserializeGuard<ScaledObject>) -> Option<ScaledObject> {
    match obj.0 {
        Ok(so) => Some(so),
        Err(bad) => {
            warn!(
                scaledobject = %format!("{}/{}", bad.metadata.namespace.unwrap_or_default(), bad.metadata.name.unwrap_or_default()),
                error = %bad.error,
                "skipping malformed ScaledObject"
            );
            None
        }
    }
}

//! KEDA's TriggerAuthentication and ClusterTriggerAuthentication controllers: KEDA's finalizer
//! (so objects created under KEDA stay deletable once ebb takes over), the
//! `keda_resource_registered_total` gauge, and KEDA's events: `TriggerAuthenticationAdded` on a
//! first-generation object, an update event on later generations, `…Deleted` on deletion.
//!
//! KEDA's update reason and message for a namespaced TriggerAuthentication say
//! "ClusterTriggerAuthentication" (`eventreason.TriggerAuthenticationUpdated` is spelled that way
//! in KEDA); they are kept as KEDA emits them, so event queries written for KEDA match.

use crate::locks::LockExt;
use std::{collections::HashMap, fmt::Debug, sync::Arc, sync::Mutex};

use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        finalizer::{Event as FinalizerEvent, finalizer},
        reflector, watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::{debug, warn};

use super::{context::Context, error::Error, status::publish, watch::changes_only};
use crate::{
    crd::{ClusterTriggerAuthentication, TriggerAuthentication},
    keda_metrics::RegisteredResource,
    scaling::{
        events::{Event, EventReason},
        reconcile::FINALIZER,
    },
};

/// What differs between the two authentication kinds.
pub trait AuthKind:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    /// The kind, as in logs.
    const KIND: &'static str;
    /// Its `type` label in `keda_resource_registered_total`.
    const RESOURCE: RegisteredResource;
    /// Event reason on generation 1.
    const ADDED: EventReason;
    /// Event message on generation 1.
    const ADDED_MESSAGE: &'static str;
    /// Event reason on later generations.
    const UPDATED: EventReason;
    /// Event reason once deleted.
    const DELETED: EventReason;
    /// Event message on a later generation.
    fn updated_message(name: &str) -> String;
    /// The API the object is written through.
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// The API watched: the watched namespace for a namespaced kind (KEDA ignores the others).
    fn watched(client: Client, namespace: Option<&str>) -> Api<DeserializeGuard<Self>>;
}

impl AuthKind for TriggerAuthentication {
    const KIND: &'static str = "TriggerAuthentication";
    const RESOURCE: RegisteredResource = RegisteredResource::TriggerAuthentication;
    const ADDED: EventReason = EventReason::TriggerAuthenticationAdded;
    const ADDED_MESSAGE: &'static str = "New TriggerAuthentication configured";
    // KEDA's constant and message, spelled as KEDA spells them (module docs).
    const UPDATED: EventReason = EventReason::ClusterTriggerAuthenticationUpdated;
    const DELETED: EventReason = EventReason::TriggerAuthenticationDeleted;
    fn updated_message(name: &str) -> String {
        format!("ClusterTriggerAuthentication {name} is updated")
    }
    fn api(client: Client, namespace: Option<&str>) -> Api<TriggerAuthentication> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
    fn watched(client: Client, namespace: Option<&str>) -> Api<DeserializeGuard<TriggerAuthentication>> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
}

impl AuthKind for ClusterTriggerAuthentication {
    const KIND: &'static str = "ClusterTriggerAuthentication";
    const RESOURCE: RegisteredResource = RegisteredResource::ClusterTriggerAuthentication;
    const ADDED: EventReason = EventReason::ClusterTriggerAuthenticationAdded;
    const ADDED_MESSAGE: &'static str = "New ClusterTriggerAuthentication configured";
    const UPDATED: EventReason = EventReason::ClusterTriggerAuthenticationUpdated;
    const DELETED: EventReason = EventReason::ClusterTriggerAuthenticationDeleted;
    fn updated_message(name: &str) -> String {
        format!("ClusterTriggerAuthentication {name} is updated")
    }
    fn api(client: Client, _namespace: Option<&str>) -> Api<ClusterTriggerAuthentication> {
        Api::all(client)
    }
    fn watched(
        client: Client,
        _namespace: Option<&str>,
    ) -> Api<DeserializeGuard<ClusterTriggerAuthentication>> {
        Api::all(client)
    }
}

/// The operator's context plus which authentication objects are counted, and under which
/// namespace, so a deletion takes back exactly what was added.
pub struct AuthContext {
    /// Client, recorder, metrics.
    pub op: Arc<Context>,
    counted: Mutex<HashMap<(RegisteredResource, String), String>>,
}

impl AuthContext {
    /// A context over the operator's.
    pub fn new(op: Arc<Context>) -> Self {
        Self {
            op,
            counted: Mutex::new(HashMap::new()),
        }
    }

    fn key<K: AuthKind>(obj: &K) -> (RegisteredResource, String) {
        (
            K::RESOURCE,
            format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        )
    }

    /// KEDA counts cluster-scoped objects under namespace `default`.
    fn namespace<K: AuthKind>(obj: &K) -> String {
        obj.namespace()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string())
    }

    fn applied<K: AuthKind>(&self, obj: &K) {
        let Some(m) = &self.op.metrics else { return };
        let namespace = Self::namespace(obj);
        let old = self
            .counted
            .lock_or_recover()
            .insert(Self::key(obj), namespace.clone());
        if old.as_deref() != Some(namespace.as_str()) {
            if let Some(old) = old {
                m.dec_resource_registered(K::RESOURCE, &old);
            }
            m.inc_resource_registered(K::RESOURCE, &namespace);
        }
    }

    fn removed<K: AuthKind>(&self, obj: &K) {
        let Some(m) = &self.op.metrics else { return };
        let old = self.counted.lock_or_recover().remove(&Self::key(obj));
        if let Some(old) = old {
            m.dec_resource_registered(K::RESOURCE, &old);
        }
    }

    async fn publish<K: AuthKind>(&self, obj: &K, reason: EventReason, note: String) {
        publish(&self.op, obj, vec![Event::normal(reason, note)]).await;
    }
}

/// One reconcile of a (Cluster)TriggerAuthentication, as KEDA's controller does it.
pub async fn reconcile<K: AuthKind>(obj: Arc<K>, ctx: Arc<AuthContext>) -> Result<Action, Error> {
    let api = K::api(ctx.op.client.clone(), obj.namespace().as_deref());
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(o) => {
                ctx.applied(&*o);
                if o.meta().generation == Some(1) {
                    ctx.publish(&*o, K::ADDED, K::ADDED_MESSAGE.to_string()).await;
                } else {
                    ctx.publish(&*o, K::UPDATED, K::updated_message(&o.name_any()))
                        .await;
                }
            }
            FinalizerEvent::Cleanup(o) => {
                ctx.removed(&*o);
                ctx.publish(&*o, K::DELETED, format!("{} was deleted", K::KIND))
                    .await;
            }
        }
        Ok::<_, Error>(Action::await_change())
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// What a reconcile depends on: the spec (generation), the finalizers and the deletion.
fn auth_key<K: AuthKind>(obj: &DeserializeGuard<K>) -> u64 {
    let m = obj.meta();
    let mut bytes =
        serde_json::to_vec(&(m.generation, &m.finalizers, &m.deletion_timestamp)).unwrap_or_default();
    if obj.0.is_err() {
        bytes.extend(m.resource_version.as_deref().unwrap_or_default().as_bytes());
    }
    crate::hash::fnv1a(&bytes)
}

/// Runs the controller of `K` (in one namespace, or all) until its watch ends.
pub async fn run<K: AuthKind>(ctx: Arc<AuthContext>, namespace: Option<String>) {
    let objects = K::watched(ctx.op.client.clone(), namespace.as_deref());
    let (reader, writer) = reflector::store();
    let stream = watcher(objects, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    Controller::for_stream(changes_only(stream, auth_key::<K>), reader)
        .run(reconcile_guarded::<K>, error_policy::<K>, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                debug!(error = %e, kind = K::KIND, "reconcile error");
            }
        })
        .await;
}

async fn reconcile_guarded<K: AuthKind>(
    obj: Arc<DeserializeGuard<K>>,
    ctx: Arc<AuthContext>,
) -> Result<Action, Error> {
    match &obj.0 {
        Ok(o) => reconcile(Arc::new(o.clone()), ctx).await,
        Err(bad) => {
            warn!(
                kind = K::KIND,
                name = %bad.metadata.name.clone().unwrap_or_default(),
                namespace = %bad.metadata.namespace.clone().unwrap_or_default(),
                error = %bad.error,
                "skipping malformed object"
            );
            Ok(Action::await_change())
        }
    }
}

fn error_policy<K: AuthKind>(obj: Arc<DeserializeGuard<K>>, error: &Error, _ctx: Arc<AuthContext>) -> Action {
    warn!(
        kind = K::KIND,
        name = %obj.meta().name.clone().unwrap_or_default(),
        error = %crate::report::error_chain(error),
        "reconcile failed"
    );
    Action::requeue(std::time::Duration::from_secs(30))
}

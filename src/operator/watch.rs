//! Watch-stream filters shared by the operator's controllers.

use std::collections::HashMap;

use futures::StreamExt;
use kube::{Resource, core::DeserializeGuard, runtime::watcher};

/// Passes an applied object on only when `key` changed since it was last passed, and every
/// deletion (a deleted HPA must be recreated even though its generation did not change).
pub fn changes_only<K, S>(
    events: S,
    key: fn(&K) -> u64,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    events.flat_map(move |event| {
        let id = |o: &K| {
            let m = o.meta();
            format!(
                "{}/{}/{}",
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default(),
                m.uid.as_deref().unwrap_or_default()
            )
        };
        let out = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let k = key(&o);
                if seen.insert(id(&o), k) == Some(k) {
                    None
                } else {
                    Some(Ok(o))
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&id(&o));
                Some(Ok(o))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::stream::iter(out)
    })
}

/// What a reconcile of a ScaledObject or ScaledJob depends on: spec (generation), annotations
/// (pause), labels, finalizers and deletion. Status writes, ebb's own included, change none of
/// them, so they do not queue another reconcile (KEDA filters with GenerationChangedPredicate and
/// its annotation predicates).
pub fn reconcile_key<K>(obj: &DeserializeGuard<K>) -> u64
where
    K: Resource<DynamicType = ()>,
{
    let m = obj.meta();
    let mut bytes = serde_json::to_vec(&(
        m.generation,
        &m.annotations,
        &m.labels,
        &m.finalizers,
        &m.deletion_timestamp,
    ))
    .unwrap_or_default();
    // An object that failed to deserialise is keyed by its resourceVersion: any edit may fix it.
    if obj.0.is_err() {
        bytes.extend(m.resource_version.as_deref().unwrap_or_default().as_bytes());
    }
    crate::hash::fnv1a(&bytes)
}

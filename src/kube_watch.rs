//! The reflector loop that keeps a watch cache current until shutdown, shared by the caches
//! that scalers and the TriggerAuthentication resolver read from memory.

use std::{fmt::Debug, hash::Hash};

use futures::StreamExt;
use kube::{
    Api, Resource,
    runtime::{WatchStreamExt, reflector::store::Writer, watcher},
};
use serde::de::DeserializeOwned;

use crate::shutdown::Signal;

/// Watches `api` (any semantic, default back-off), slims each object with `modify`, keeps
/// `writer`'s store current and hands every event or error to `on_event`, until `shutdown`
/// fires or the stream ends.
pub async fn reflect_until_shutdown<K>(
    api: Api<K>,
    modify: fn(&mut K),
    writer: Writer<K>,
    shutdown: Signal,
    mut on_event: impl FnMut(Result<&watcher::Event<K>, &watcher::Error>),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(modify)
        .reflect(writer);
    futures::pin_mut!(stream);
    loop {
        let event = tokio::select! {
            _ = shutdown.wait() => return,
            e = stream.next() => e,
        };
        match event {
            None => return,
            Some(e) => on_event(e.as_ref()),
        }
    }
}

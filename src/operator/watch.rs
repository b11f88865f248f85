//! Watch-stream filters shared by the operator's controllers.

use std::collections::HashMap;

use futures::StreamExt;
use kube::{Resource, runtime::watcher};

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

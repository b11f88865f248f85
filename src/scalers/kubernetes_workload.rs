//! `kubernetes-workload` scaler (spec §12.7): the number of live pods matching a label selector
//! in the ScaledObject's namespace, or the number of distinct nodes they run on.
//!
//! Pods come from a [`PodIndex`], a watch cache, so a read never lists pods from the API server.

use crate::locks::LockExt;
use crate::scalers::SingleMetric;
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::{
    Api, Client,
    runtime::{
        reflector::{Store, store::Writer},
        watcher,
    },
};
use tracing::{Instrument, info, warn};

use crate::kube_watch;

use super::{
    MetricTarget, MetricsAndActivity, ScalerConfig, ScalerContext, ScalerError, metric_name, params::Params,
};
use crate::{crd::scaled_object::MetricTargetType, selector::Selector};

/// Where a [`PodIndex`] gets its pods, which decides what "not ready" means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodSource {
    /// A cluster watch; ready after the first full list.
    Cluster,
    /// `--local` Pod documents (or a test); ready once any pod was given.
    Local,
}

/// A watch cache of pods with label-selector counting; cheap to clone (shared store).
#[derive(Clone)]
pub struct PodIndex {
    store: Store<Pod>,
    writer: Option<Arc<Mutex<Writer<Pod>>>>,
    ready: Arc<AtomicBool>,
    source: PodSource,
}

impl fmt::Debug for PodIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodIndex")
            .field("pods", &self.store.len())
            .field("ready", &self.is_ready())
            .field("source", &self.source)
            .finish()
    }
}

impl Default for PodIndex {
    fn default() -> Self {
        Self::local()
    }
}

impl PodIndex {
    /// An empty, replaceable index for `--local` Pod documents; not ready until it holds a pod.
    pub fn local() -> Self {
        let writer = Writer::<Pod>::default();
        Self {
            store: writer.as_reader(),
            writer: Some(Arc::new(Mutex::new(writer))),
            ready: Arc::new(AtomicBool::new(false)),
            source: PodSource::Local,
        }
    }

    /// An index over a fixed set of pods (tests, `--local`); ready even when empty.
    pub fn from_pods(pods: Vec<Pod>) -> Self {
        let index = Self::local();
        index.apply_list(pods);
        index.ready.store(true, Ordering::Relaxed);
        index
    }

    /// Replaces the pods of a local index (the `--local` directory changed). Ignored for a
    /// cluster index, whose contents belong to its watch.
    pub fn replace(&self, pods: Vec<Pod>) {
        if self.source != PodSource::Local {
            return;
        }
        // "Local pods exist" is sticky: deleting the last Pod document means zero pods, not
        // "no pod source", which would turn counts into errors.
        if !pods.is_empty() {
            self.ready.store(true, Ordering::Relaxed);
        }
        self.apply_list(pods);
    }

    fn apply_list(&self, pods: Vec<Pod>) {
        let Some(writer) = &self.writer else { return };
        let mut w = writer.lock_or_recover();
        w.apply_watcher_event(&watcher::Event::Init);
        for pod in pods {
            w.apply_watcher_event(&watcher::Event::InitApply(slim(pod)));
        }
        w.apply_watcher_event(&watcher::Event::InitDone);
    }

    /// Watches every pod in the cluster until `shutdown`; counts are served from memory.
    ///
    /// Needs `list`/`watch` on pods cluster-wide. Only name, namespace, labels, node and
    /// phase are kept, so memory stays at a few hundred bytes per pod.
    pub fn start(client: Client, shutdown: crate::shutdown::Signal) -> Self {
        let writer = Writer::<Pod>::default();
        let index = Self {
            store: writer.as_reader(),
            writer: None,
            ready: Arc::new(AtomicBool::new(false)),
            source: PodSource::Cluster,
        };
        let ready = index.ready.clone();
        let api: Api<Pod> = Api::all(client);
        // Not an upstream call per read: `count` answers from this cache. The watch's own log
        // lines carry the span it was started in (the component's).
        tokio::spawn(
            kube_watch::reflect_until_shutdown(
                api,
                slim_in_place,
                writer,
                shutdown,
                move |event| match event {
                    Ok(watcher::Event::InitDone) => {
                        if !ready.swap(true, Ordering::Relaxed) {
                            info!("pod cache synced");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "pod watch failed; retrying"),
                },
            )
            .in_current_span(),
        );
        index
    }

    /// True once counts can be trusted (first list done, or local pods given).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Number of pods in `namespace` matching `selector` whose phase is not Succeeded or
    /// Failed; with `group_by_node`, the number of distinct non-empty node names among them.
    pub fn count(&self, namespace: &str, selector: &Selector, group_by_node: bool) -> usize {
        let empty = BTreeMap::new();
        let matching = self.store.state_filter(|pod| {
            pod.metadata.namespace.as_deref() == Some(namespace)
                && selector.matches(pod.metadata.labels.as_ref().unwrap_or(&empty))
                && !matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        });
        if !group_by_node {
            return matching.len();
        }
        matching
            .iter()
            .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()))
            .filter(|n| !n.is_empty())
            .collect::<BTreeSet<_>>()
            .len()
    }
}

impl PodIndex {
    /// Pods in `namespace` matching `selector` that are Running with condition Ready=True
    /// (KEDA's ready-pod count for fallback with `Value` targets).
    pub fn count_ready(&self, namespace: &str, selector: &Selector) -> usize {
        let empty = BTreeMap::new();
        self.store
            .state_filter(|pod| {
                let status = pod.status.as_ref();
                pod.metadata.namespace.as_deref() == Some(namespace)
                    && selector.matches(pod.metadata.labels.as_ref().unwrap_or(&empty))
                    && status.and_then(|s| s.phase.as_deref()) == Some("Running")
                    && status
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .len()
    }
}

/// Keeps only what counting needs.
fn slim(mut pod: Pod) -> Pod {
    slim_in_place(&mut pod);
    pod
}

fn slim_in_place(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    pod.spec = pod.spec.take().map(|s| PodSpec {
        node_name: s.node_name,
        ..Default::default()
    });
    // The Ready condition stays: fallback divides by the number of ready pods.
    pod.status = pod.status.take().map(|s| PodStatus {
        phase: s.phase,
        conditions: s
            .conditions
            .map(|cs| cs.into_iter().filter(|c| c.type_ == "Ready").collect()),
        ..Default::default()
    });
}

fn meta_error(msg: impl fmt::Display) -> ScalerError {
    ScalerError::Config(format!("error parsing kubernetes workload metadata: {msg}"))
}

/// Counts the ScaledObject's pods matching `podSelector`.
pub struct WorkloadScaler {
    selector: Selector,
    selector_text: String,
    value: f64,
    activation_value: f64,
    group_by_node: bool,
    namespace: String,
    trigger_index: usize,
    metric_type: MetricTargetType,
    pods: Option<PodIndex>,
}

impl fmt::Debug for WorkloadScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadScaler")
            .field("pod_selector", &self.selector_text)
            .field("value", &self.value)
            .field("activation_value", &self.activation_value)
            .field("group_by_node", &self.group_by_node)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl WorkloadScaler {
    /// Parses the trigger metadata; a missing pod index is reported on read, not here, so the
    /// trigger's metric name stays known to the HPA.
    pub fn new(config: &ScalerConfig, ctx: &ScalerContext) -> Result<Self, ScalerError> {
        let p = Params::new(config);
        let selector_text: String = p.meta("podSelector").required().map_err(meta_error)?;
        let selector = crate::selector::parse(&selector_text)
            .map_err(|e| meta_error(format!("invalid podSelector {selector_text:?}: {e}")))?;
        let value: f64 = p.meta("value").or(0.0).map_err(meta_error)?;
        let activation_value: f64 = p.meta("activationValue").or(0.0).map_err(meta_error)?;
        let group_by_node: bool = p.meta("groupByNode").or(false).map_err(meta_error)?;
        if value <= 0.0 && !config.as_metric_source {
            return Err(meta_error("value must be a float greater than 0"));
        }
        Ok(Self {
            selector,
            selector_text,
            value,
            activation_value,
            group_by_node,
            namespace: config.namespace.clone(),
            trigger_index: config.trigger_index,
            metric_type: config.metric_type,
            pods: ctx.pods.clone(),
        })
    }

    /// The external metric name, `s<i>-workload-<namespace>`.
    pub fn metric_name(&self) -> String {
        metric_name(self.trigger_index, &format!("workload-{}", self.namespace))
    }

    fn measure(&self) -> Result<MetricsAndActivity, ScalerError> {
        let Some(pods) = &self.pods else {
            return Err(ScalerError::Upstream(
                "kubernetes-workload needs a cluster (or Pod documents with --local)".into(),
            ));
        };
        if !pods.is_ready() {
            return Err(ScalerError::Upstream(match pods.source {
                PodSource::Cluster => "kubernetes-workload: the pod cache is not synced yet".into(),
                PodSource::Local => {
                    "kubernetes-workload needs a cluster (or Pod documents with --local)".into()
                }
            }));
        }
        let count = pods.count(&self.namespace, &self.selector, self.group_by_node) as f64;
        Ok(MetricsAndActivity {
            values: vec![count],
            active: count > self.activation_value,
        })
    }
}

impl SingleMetric for WorkloadScaler {
    fn activation_threshold(&self) -> f64 {
        self.activation_value
    }

    fn metric(&self) -> (String, MetricTarget) {
        (
            self.metric_name(),
            MetricTarget {
                kind: self.metric_type,
                value: self.value,
                integer: false,
            },
        )
    }

    fn read_metric(&self) -> BoxFuture<'_, Result<MetricsAndActivity, ScalerError>> {
        let result = self.measure();
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::scalers::{MetricSpec, Scaler};

    fn config(meta: &[(&str, &str)]) -> ScalerConfig {
        ScalerConfig {
            namespace: "team-a".into(),
            trigger_index: 2,
            trigger_type: "kubernetes-workload".into(),
            metadata: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)], phase: &str, node: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: (!phase.is_empty()).then(|| phase.to_string()),
                ..Default::default()
            }),
        }
    }

    fn pods() -> PodIndex {
        PodIndex::from_pods(vec![
            pod("team-a", "a1", &[("app", "web"), ("tier", "fe")], "Running", "n1"),
            pod("team-a", "a2", &[("app", "web")], "Pending", ""),
            pod("team-a", "a3", &[("app", "web")], "Unknown", "n1"),
            pod("team-a", "a4", &[("app", "web")], "Succeeded", "n2"),
            pod("team-a", "a5", &[("app", "web")], "Failed", "n3"),
            pod("team-a", "a6", &[("app", "api")], "Running", "n4"),
            pod("team-a", "a7", &[("app", "web")], "", "n5"),
            pod("team-b", "b1", &[("app", "web")], "Running", "n6"),
        ])
    }

    fn sel(s: &str) -> Selector {
        crate::selector::parse(s).expect("selector")
    }

    #[test]
    fn counting_follows_phase_namespace_and_selector() {
        let idx = pods();
        // a1, a2, a3, a7: Succeeded/Failed are not counted, a phase-less pod is.
        assert_eq!(idx.count("team-a", &sel("app=web"), false), 4);
        assert_eq!(idx.count("team-a", &sel("app in (web, api)"), false), 5);
        assert_eq!(idx.count("team-a", &sel("app notin (web)"), false), 1);
        assert_eq!(idx.count("team-a", &sel("tier"), false), 1);
        assert_eq!(idx.count("team-a", &sel("!tier,app=web"), false), 3);
        assert_eq!(idx.count("team-b", &sel("app=web"), false), 1);
        assert_eq!(idx.count("team-c", &sel("app=web"), false), 0);
        // Nodes n1 (twice) and n5; the unscheduled pod has no node.
        assert_eq!(idx.count("team-a", &sel("app=web"), true), 2);
    }

    #[test]
    fn ready_pods_are_running_with_ready_true() {
        let ready = |mut p: Pod, status: &str| {
            p.status.get_or_insert_with(Default::default).conditions =
                Some(vec![k8s_openapi::api::core::v1::PodCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    ..Default::default()
                }]);
            p
        };
        let idx = PodIndex::from_pods(vec![
            ready(pod("team-a", "r1", &[("app", "web")], "Running", "n1"), "True"),
            ready(
                pod("team-a", "r2", &[("app", "web")], "Running", "False"),
                "False",
            ),
            ready(pod("team-a", "r3", &[("app", "web")], "Pending", ""), "True"),
            pod("team-a", "r4", &[("app", "web")], "Running", "n1"),
            ready(pod("team-b", "r5", &[("app", "web")], "Running", "n1"), "True"),
        ]);
        assert_eq!(idx.count_ready("team-a", &sel("app=web")), 1);
        assert_eq!(idx.count_ready("team-b", &sel("app=web")), 1);
        assert_eq!(idx.count_ready("team-a", &sel("app=api")), 0);
    }

    #[test]
    fn local_index_can_be_replaced() {
        let idx = PodIndex::local();
        assert!(!idx.is_ready());
        idx.replace(vec![pod("team-a", "x", &[("app", "web")], "Running", "n1")]);
        assert!(idx.is_ready());
        assert_eq!(idx.count("team-a", &sel("app=web"), false), 1);
        idx.replace(Vec::new());
        assert!(idx.is_ready());
        assert_eq!(idx.count("team-a", &sel("app=web"), false), 0);
    }

    #[test]
    fn metadata_table() {
        let ok: &[&[(&str, &str)]] = &[
            &[("podSelector", "app=demo"), ("value", "1")],
            &[
                ("podSelector", "app in (a, b),deploy in (x, y)"),
                ("value", "2.5"),
            ],
            &[
                ("podSelector", "app=demo"),
                ("value", "1"),
                ("activationValue", "3"),
                ("groupByNode", "true"),
            ],
        ];
        for meta in ok {
            assert!(
                WorkloadScaler::new(&config(meta), &ScalerContext::default()).is_ok(),
                "{meta:?}"
            );
        }
        let bad: &[(&[(&str, &str)], &str)] = &[
            (&[("value", "1")], "missing required parameter \"podSelector\""),
            (
                &[("podSelector", "app=demo")],
                "value must be a float greater than 0",
            ),
            (
                &[("podSelector", "app=demo"), ("value", "0")],
                "value must be a float greater than 0",
            ),
            (
                &[("podSelector", "app=demo"), ("value", "-1")],
                "value must be a float greater than 0",
            ),
            (&[("podSelector", "app=demo"), ("value", "a")], "value"),
            (
                &[("podSelector", "app in (a"), ("value", "1")],
                "invalid podSelector",
            ),
            (
                &[
                    ("podSelector", "app=demo"),
                    ("value", "1"),
                    ("groupByNode", "yes"),
                ],
                "groupByNode",
            ),
            (
                &[
                    ("podSelector", "app=demo"),
                    ("value", "1"),
                    ("activationValue", "x"),
                ],
                "activationValue",
            ),
        ];
        for (meta, want) in bad {
            let e = WorkloadScaler::new(&config(meta), &ScalerContext::default()).expect_err("fails");
            assert!(e.to_string().contains(want), "{meta:?}: {e}");
        }
        // As a scalingModifiers metric source the target may be 0.
        let mut c = config(&[("podSelector", "app=demo")]);
        c.as_metric_source = true;
        assert!(WorkloadScaler::new(&c, &ScalerContext::default()).is_ok());
    }

    #[test]
    fn metric_name_and_target() {
        let s = WorkloadScaler::new(
            &config(&[("podSelector", "app=demo"), ("value", "2.5")]),
            &ScalerContext::default(),
        )
        .expect("builds");
        assert_eq!(
            s.metric_specs(),
            vec![MetricSpec::External {
                name: "s2-workload-team-a".into(),
                target: MetricTarget {
                    kind: MetricTargetType::AverageValue,
                    value: 2.5,
                    integer: false,
                },
            }]
        );
    }

    #[tokio::test]
    async fn reads_count_and_activity() {
        let ctx = ScalerContext {
            pods: Some(pods()),
            ..Default::default()
        };
        let s = WorkloadScaler::new(
            &config(&[
                ("podSelector", "app=web"),
                ("value", "1"),
                ("activationValue", "4"),
            ]),
            &ctx,
        )
        .expect("builds");
        let m = s
            .get_metrics_and_activity("s2-workload-team-a")
            .await
            .expect("reads");
        assert_eq!(m.values, vec![4.0]);
        assert!(!m.active, "4 is not > 4");
        let s = WorkloadScaler::new(
            &config(&[
                ("podSelector", "app=web"),
                ("value", "1"),
                ("groupByNode", "true"),
            ]),
            &ctx,
        )
        .expect("builds");
        let m = s.get_metrics_and_activity("x").await.expect("reads");
        assert_eq!(m.values, vec![2.0]);
        assert!(m.active);
    }

    #[tokio::test]
    async fn without_pods_a_read_fails() {
        let s = WorkloadScaler::new(
            &config(&[("podSelector", "app=web"), ("value", "1")]),
            &ScalerContext::default(),
        )
        .expect("builds without a cluster");
        let e = s.get_metrics_and_activity("x").await.expect_err("fails");
        assert_eq!(
            e.to_string(),
            "kubernetes-workload needs a cluster (or Pod documents with --local)"
        );
        let ctx = ScalerContext {
            pods: Some(PodIndex::local()),
            ..Default::default()
        };
        let s = WorkloadScaler::new(&config(&[("podSelector", "app=web"), ("value", "1")]), &ctx)
            .expect("builds");
        assert!(s.get_metrics_and_activity("x").await.is_err());
    }
}

//! The cluster half of `ebb explain`: reads (never writes) the ScaledObject, its HPA, the scale
//! target's `/scale` and status, and the triggers' view, then fills an [`ObjectView`].
//!
//! The triggers come from the metrics server's admin port through the API server's service
//! proxy (`/api/v1/namespaces/NS/services/http:NAME:PORT/proxy/debug/scaledobjects/...`): the
//! values the HPA was served and the fallback counters of the process that counts them. When
//! that is not reachable (no `services/proxy` permission, the metrics server down, an older
//! version), the triggers are built here from the ScaledObject and the TriggerAuthentications,
//! Secrets and ConfigMaps they name, and read once from this machine; the view says which.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Secret},
};
use kube::{Api, Client};
use serde::Serialize;

use crate::{
    cluster::{ClientError, scale},
    crd::{
        ScaledObject,
        trigger_authentication::{
            ClusterTriggerAuthentication, TriggerAuthentication, TriggerAuthenticationSpec,
        },
    },
    engine::Engine,
    inspect,
    quantity::parse_quantity,
    resolver::{cluster_object_namespace, files::LocalResolver},
    scalers::{ScalerContext, registry::ObjectSummary},
    scaling::{
        activation::pause_state,
        explain::{ConditionView, HpaView, ObjectView, PauseView, cooldown_left, verdict},
        hpa::hpa_name,
        target::resolution,
    },
};

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No kubeconfig or client.
    #[error("no Kubernetes client: {0}")]
    Client(String),
    /// `--metrics-service` is not `NAMESPACE/NAME:PORT`.
    #[error("--metrics-service {0:?} is not NAMESPACE/NAME:PORT")]
    MetricsService(String),
    /// The ScaledObject does not exist.
    #[error("scaledobjects.keda.sh \"{name}\" not found in namespace \"{namespace}\"")]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The ScaledObject could not be read.
    #[error("get scaledobjects.keda.sh {namespace}/{name}")]
    Get {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

impl From<ClientError> for ClusterError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Kubeconfig(path, e) => {
                ClusterError::Client(format!("{}: {}", path.display(), crate::report::error_chain(&e)))
            }
            ClientError::Kube(e) => ClusterError::Client(e.to_string()),
        }
    }
}

/// What to read.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ScaledObject's namespace.
    pub namespace: String,
    /// The ScaledObject's name.
    pub name: String,
    /// The metrics server's admin Service: namespace, name, port (name or number).
    pub service: (String, String, String),
    /// Timeout of the offline trigger reads.
    pub timeout: Duration,
}

impl Options {
    /// Options from the flags (`service` is `NAMESPACE/NAME:PORT`).
    pub fn new(namespace: &str, name: &str, service: &str, timeout: Duration) -> Result<Self, ClusterError> {
        let bad = || ClusterError::MetricsService(service.to_string());
        let (ns, rest) = service.split_once('/').ok_or_else(bad)?;
        let (svc, port) = rest.split_once(':').ok_or_else(bad)?;
        if [ns, svc, port]
            .iter()
            .any(|s| s.is_empty() || s.contains(['/', '?', '#']))
        {
            return Err(bad());
        }
        Ok(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            service: (ns.to_string(), svc.to_string(), port.to_string()),
            timeout,
        })
    }

    /// The service-proxy path of the metrics server's view of the object.
    pub fn proxy_path(&self) -> String {
        let (ns, svc, port) = &self.service;
        format!(
            "/api/v1/namespaces/{ns}/services/http:{svc}:{port}/proxy/debug/scaledobjects/{}/{}",
            self.namespace, self.name
        )
    }
}

fn error_text(e: &impl std::error::Error) -> String {
    crate::report::error_chain(e)
}

/// Reads the cluster and returns the view with its verdict; `now_unix` is the time cooldown
/// is counted against.
pub async fn view(client: &Client, opts: &Options, now_unix: i64) -> Result<ObjectView, ClusterError> {
    let (ns, name) = (opts.namespace.as_str(), opts.name.as_str());
    let so = match Api::<ScaledObject>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
    {
        Ok(Some(so)) => so,
        Ok(None) => {
            return Err(ClusterError::NotFound {
                namespace: ns.to_string(),
                name: name.to_string(),
            });
        }
        Err(source) => {
            return Err(ClusterError::Get {
                namespace: ns.to_string(),
                name: name.to_string(),
                source,
            });
        }
    };
    let mut problems = Vec::new();
    let target = read_target(client, &so, &mut problems).await;
    let mut out = match metrics_server_view(client, opts).await {
        Ok(v) => {
            let mut v = v;
            v.source = format!(
                "the cluster; triggers from the metrics server {}/{} (service proxy)",
                opts.service.0, opts.service.1
            );
            v
        }
        Err(why) => {
            let mut v = offline_view(
                client,
                &so,
                target.as_ref().map(|t| &t.object),
                opts,
                &mut problems,
            )
            .await
            .unwrap_or_default();
            v.source = format!(
                "the cluster; triggers read once from this machine (metrics server not reachable: {why})"
            );
            // The operator's counters, as its status shows them.
            let health = so.status.as_ref().and_then(|s| s.health.as_ref());
            for t in &mut v.triggers {
                if let Some(h) = t.metric.as_ref().and_then(|m| health?.get(m)) {
                    t.consecutive_failures = h.number_of_failures.unwrap_or(0);
                }
            }
            v
        }
    };
    // Everything below comes from the cluster, whoever read the triggers.
    out.problems = problems;
    out.namespace = ns.to_string();
    out.name = name.to_string();
    let summary = ObjectSummary::of(&so);
    out.min_replica_count = summary.min_replica_count;
    out.max_replica_count = summary.max_replica_count;
    out.idle_replica_count = summary.idle_replica_count;
    out.cooldown_period = summary.cooldown_period;
    out.polling_interval = i64::from(
        so.spec
            .polling_interval
            .unwrap_or(crate::crd::scaled_object::DEFAULT_POLLING_INTERVAL),
    );
    out.formula = summary.formula;
    let pause = pause_state(so.metadata.annotations.as_ref());
    out.pause = PauseView {
        paused: pause.paused,
        paused_replicas: pause.paused_replicas.clone(),
        scale_in: pause.scale_in_paused,
        scale_out: pause.scale_out_paused,
    };
    let status = so.status.clone().unwrap_or_default();
    out.conditions = status
        .conditions
        .iter()
        .flatten()
        .map(|c| ConditionView {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        })
        .collect();
    if let Some(t) = &target {
        out.replicas = Some(t.replicas);
        out.ready_pods = t.ready;
    }
    out.hpa = read_hpa(client, &so, status.hpa_name.as_deref(), &mut out.problems).await;
    fill_from_hpa(&mut out);
    out.last_active_time = status.last_active_time.clone();
    let last_active = status
        .last_active_time
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp());
    let idle = out.idle_replica_count.unwrap_or(0);
    let can_idle = out.min_replica_count == 0 || out.idle_replica_count.is_some();
    let any_active = out
        .triggers
        .iter()
        .any(|t| t.active == Some(true) || t.fallback_active);
    if let (Some(last), Some(replicas), true) = (last_active, out.replicas, can_idle)
        && !out.pause.paused
        && out.pause.paused_replicas.is_none()
    {
        if replicas <= idle {
            out.idle_for_seconds = Some((now_unix - last).max(0));
        } else if !any_active {
            out.cooldown_left_seconds = Some(cooldown_left(last, out.cooldown_period, now_unix));
        }
    }
    out.verdict = verdict(&out);
    Ok(out)
}

/// The HPA's currentMetrics stand in for a trigger value this machine could not read.
fn fill_from_hpa(out: &mut ObjectView) {
    let Some(hpa) = &out.hpa else { return };
    let current = hpa.current_replicas.unwrap_or(0).max(1);
    for t in &mut out.triggers {
        let Some(metric) = &t.metric else { continue };
        if t.value.is_some() || !out.source.contains("this machine") {
            continue;
        }
        let Some(v) = hpa.current_metrics.get(metric) else {
            continue;
        };
        // The HPA shows an AverageValue target's metric per current pod; the scaler's value
        // is the total.
        let total = match t.target_type.as_deref() {
            Some("Value") => *v,
            _ => *v * f64::from(current),
        };
        if let Some(e) = t.error.take() {
            out.problems.push(format!(
                "s{} read from this machine failed ({e}); its value is the HPA's currentMetrics",
                t.index
            ));
        }
        t.value = Some(total);
        t.value_source = "hpa".to_string();
        t.value_age_seconds = None;
        t.active = t.activation_threshold.map(|a| total > a);
    }
}

/// What the scale target shows.
struct Target {
    replicas: i32,
    ready: Option<i32>,
    /// The workload as read (for its containers' env, which triggers may resolve from).
    object: serde_json::Value,
}

async fn read_target(client: &Client, so: &ScaledObject, problems: &mut Vec<String>) -> Option<Target> {
    let ns = so.metadata.namespace.clone().unwrap_or_default();
    let recorded = so.status.as_ref().and_then(|s| s.scale_target_gvkr.as_ref());
    let gvkr = match scale::resolve(client, &scale::Plurals::default(), resolution(so, recorded)).await {
        Ok(g) => g,
        Err(e) => {
            problems.push(format!("scale target: {e}"));
            return None;
        }
    };
    let name = &so.spec.scale_target_ref.name;
    let replicas = match scale::get(client, &ns, &gvkr, name).await {
        Ok(s) => scale::replicas(&s),
        Err(e) => {
            problems.push(format!("scale target: {}", error_text(&e)));
            return None;
        }
    };
    let (ready, object) = match scale::target_api(client, &ns, &gvkr).get_opt(name).await {
        Ok(Some(o)) => {
            let value = serde_json::to_value(&o).unwrap_or_default();
            // Deployments and StatefulSets omit readyReplicas when it is 0.
            let ready = value["status"]["readyReplicas"]
                .as_i64()
                .or_else(|| value.get("status").map(|_| 0))
                .and_then(|r| i32::try_from(r).ok());
            (ready, value)
        }
        Ok(None) => (None, serde_json::Value::Null),
        Err(e) => {
            problems.push(format!(
                "ready pods of {}/{name}: {}",
                gvkr.resource,
                error_text(&e)
            ));
            (None, serde_json::Value::Null)
        }
    };
    Some(Target {
        replicas,
        ready,
        object,
    })
}

async fn read_hpa(
    client: &Client,
    so: &ScaledObject,
    recorded: Option<&str>,
    problems: &mut Vec<String>,
) -> Option<HpaView> {
    let ns = so.metadata.namespace.clone().unwrap_or_default();
    let name = recorded.map_or_else(|| hpa_name(so), str::to_string);
    let hpa = match Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await
    {
        Ok(Some(h)) => h,
        Ok(None) => {
            problems.push(format!(
                "HPA {name} not found (paused objects and new ones have none)"
            ));
            return None;
        }
        Err(e) => {
            problems.push(format!("HPA {name}: {}", error_text(&e)));
            return None;
        }
    };
    let spec = hpa.spec.unwrap_or_default();
    let status = hpa.status.unwrap_or_default();
    let current_metrics = status
        .current_metrics
        .iter()
        .flatten()
        .filter_map(|m| {
            let e = m.external.as_ref()?;
            let q = e.current.average_value.as_ref().or(e.current.value.as_ref())?;
            Some((e.metric.name.clone(), parse_quantity(&q.0).ok()?))
        })
        .collect();
    Some(HpaView {
        name,
        desired_replicas: Some(status.desired_replicas),
        current_replicas: status.current_replicas,
        min_replicas: spec.min_replicas,
        max_replicas: Some(spec.max_replicas),
        current_metrics,
        conditions: status
            .conditions
            .iter()
            .flatten()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            })
            .collect(),
    })
}

async fn metrics_server_view(client: &Client, opts: &Options) -> Result<ObjectView, String> {
    let request = http::Request::get(opts.proxy_path())
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client.request_text(request).await.map_err(|e| match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.message),
        other => error_text(&other),
    })?;
    serde_json::from_str(&text).map_err(|e| format!("not a view: {e}"))
}

fn yaml_doc<T: Serialize>(object: &T) -> Option<serde_yaml::Value> {
    serde_yaml::to_value(object).ok()
}

/// Builds the triggers here and reads each once, with the authentication the cluster holds.
async fn offline_view(
    client: &Client,
    so: &ScaledObject,
    workload: Option<&serde_json::Value>,
    opts: &Options,
    problems: &mut Vec<String>,
) -> Option<ObjectView> {
    let ns = opts.namespace.as_str();
    let cluster_ns = cluster_object_namespace(None);
    let mut docs: Vec<serde_yaml::Value> = workload
        .filter(|w| !w.is_null())
        .and_then(yaml_doc)
        .into_iter()
        .collect();
    let mut refs: Vec<(String, String, bool)> = Vec::new(); // (namespace, name, is secret)
    let mut seen = std::collections::BTreeSet::new();
    for t in &so.spec.triggers {
        let Some(r) = &t.authentication_ref else { continue };
        let kind = r
            .kind
            .clone()
            .unwrap_or_else(|| "TriggerAuthentication".to_string());
        if !seen.insert((kind.clone(), r.name.clone())) {
            continue;
        }
        let (spec, secrets_ns): (Option<TriggerAuthenticationSpec>, &str) =
            if kind == "ClusterTriggerAuthentication" {
                match Api::<ClusterTriggerAuthentication>::all(client.clone())
                    .get_opt(&r.name)
                    .await
                {
                    Ok(found) => {
                        let spec = found.as_ref().map(|c| c.spec.spec.clone());
                        docs.extend(found.as_ref().and_then(yaml_doc));
                        (spec, &cluster_ns)
                    }
                    Err(e) => {
                        problems.push(format!("{kind} {}: {}", r.name, error_text(&e)));
                        (None, &cluster_ns)
                    }
                }
            } else {
                match Api::<TriggerAuthentication>::namespaced(client.clone(), ns)
                    .get_opt(&r.name)
                    .await
                {
                    Ok(found) => {
                        let spec = found.as_ref().map(|c| c.spec.clone());
                        docs.extend(found.as_ref().and_then(yaml_doc));
                        (spec, ns)
                    }
                    Err(e) => {
                        problems.push(format!("{kind} {}: {}", r.name, error_text(&e)));
                        (None, ns)
                    }
                }
            };
        let Some(spec) = spec else { continue };
        for s in &spec.secret_target_ref {
            refs.push((secrets_ns.to_string(), s.name.clone(), true));
        }
        for c in &spec.config_map_target_ref {
            refs.push((secrets_ns.to_string(), c.name.clone(), false));
        }
    }
    refs.sort();
    refs.dedup();
    for (rns, rname, secret) in refs {
        let found = if secret {
            Api::<Secret>::namespaced(client.clone(), &rns)
                .get_opt(&rname)
                .await
                .map(|s| s.as_ref().and_then(yaml_doc))
        } else {
            Api::<ConfigMap>::namespaced(client.clone(), &rns)
                .get_opt(&rname)
                .await
                .map(|c| c.as_ref().and_then(yaml_doc))
        };
        match found {
            Ok(doc) => docs.extend(doc),
            Err(e) => problems.push(format!(
                "{} {rns}/{rname}: {}",
                if secret { "Secret" } else { "ConfigMap" },
                error_text(&e)
            )),
        }
    }
    let resolver = LocalResolver::from_documents(&docs).with_cluster_object_namespace(cluster_ns.clone());
    let engine = Engine::new(opts.timeout);
    engine.configure(
        Arc::new(resolver),
        ScalerContext {
            kube: Some(client.clone()),
            ..ScalerContext::default()
        },
    );
    let mut so = so.clone();
    // The registry keys by the object's own namespace; a ScaledObject read from the API has one.
    so.metadata.namespace.get_or_insert_with(|| ns.to_string());
    engine.registry.apply(&so);
    inspect::view(&engine, ns, &opts.name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_service_flag_and_proxy_path() {
        let o = Options::new(
            "ns",
            "web",
            "ebb/ebb-metrics-apiserver:metrics",
            Duration::from_secs(1),
        )
        .expect("valid");
        assert_eq!(
            o.proxy_path(),
            "/api/v1/namespaces/ebb/services/http:ebb-metrics-apiserver:metrics/proxy/debug/scaledobjects/ns/web"
        );
        for bad in ["ebb", "ebb/svc", "/svc:80", "ebb/:80", "ebb/svc:", "a/b/c:80"] {
            assert!(
                Options::new("ns", "web", bad, Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }
}

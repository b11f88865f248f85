//! AdmissionReview handling: decode, route by kind, run the same checks as `ebb check` plus the
//! cluster checks of KEDA's webhook (§14), and answer with the first problem.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{autoscaling::v2::HorizontalPodAutoscaler, core::v1::LimitRange};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::{
    DynamicObject, Status,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use serde_json::Value;
use tracing::{info, warn};

use super::cluster::{ClusterError, ClusterView};
use crate::{
    crd::{ScaledJob, ScaledObject},
    keda_metrics::KedaMetrics,
    quantity,
    scaling::scaled_job::validate::validate_scaled_job,
    scaling::{
        hpa::hpa_name,
        http_api::validate_http_document,
        validate::{Problem, deprecations, validate_scaled_object, validate_trigger_authentication},
    },
};

/// Shared state of the webhook handlers.
#[derive(Clone)]
pub struct WebhookContext {
    /// Where the cluster checks look.
    pub cluster: Arc<dyn ClusterView>,
    /// KEDA's webhook counters.
    pub metrics: Arc<KedaMetrics>,
}

impl std::fmt::Debug for WebhookContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookContext").finish_non_exhaustive()
    }
}

/// HPA annotation that opts an HPA out of the foreign-HPA check.
pub const HPA_OWNERSHIP_ANNOTATION: &str = "validations.keda.sh/hpa-ownership";
/// ScaledObject annotation asking to adopt an existing HPA named in the advanced settings.
pub const TRANSFER_HPA_OWNERSHIP_ANNOTATION: &str = "scaledobject.keda.sh/transfer-hpa-ownership";

/// Why a request body could not be handled as an AdmissionReview.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not an `admission.k8s.io/v1` AdmissionReview.
    #[error("invalid AdmissionReview: {0}")]
    Decode(#[source] serde_json::Error),
    /// The review carries no `request`.
    #[error("invalid AdmissionReview: no request")]
    NoRequest,
    /// Only `admission.k8s.io/v1` is registered in the manifests.
    #[error("unsupported AdmissionReview apiVersion {0:?}, expected admission.k8s.io/v1")]
    Version(String),
}

/// Decodes an AdmissionReview body into its request, refusing anything the API server would not send.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, ReviewError> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(ReviewError::Decode)?;
    if review.types.api_version != "admission.k8s.io/v1" {
        return Err(ReviewError::Version(review.types.api_version));
    }
    review.try_into().map_err(|_| ReviewError::NoRequest)
}

/// Answers one AdmissionReview body. A malformed body yields a denial with code 400 and no uid
/// (the HTTP layer answers such bodies with a 400 Status instead, see [`parse`]).
pub async fn review(body: &[u8], ctx: &WebhookContext) -> AdmissionReview<DynamicObject> {
    match parse(body) {
        Ok(req) => review_request(&req, ctx).await.into_review(),
        Err(e) => {
            let mut resp = AdmissionResponse::invalid(e.to_string());
            resp.result = resp.result.with_code(400);
            resp.into_review()
        }
    }
}

/// Answers one decoded request.
pub async fn review_request(
    req: &AdmissionRequest<DynamicObject>,
    ctx: &WebhookContext,
) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return resp;
    }
    match req.kind.kind.as_str() {
        "ScaledObject" => review_scaled_object(req, resp, ctx).await,
        "ScaledJob" => review_scaled_job(req, resp, ctx),
        "TriggerAuthentication" | "ClusterTriggerAuthentication" => review_trigger_authentication(req, resp),
        "HTTPScaledObject" | "InterceptorRoute" => review_http_add_on(req, resp),
        other => {
            warn!(kind = other, uid = %req.uid, "admission review for a kind ebb does not validate; allowed");
            resp
        }
    }
}

fn deny(resp: AdmissionResponse, code: u16, message: String) -> AdmissionResponse {
    let mut resp = resp.deny(&message);
    resp.result =
        Status::failure(&message, if code == 400 { "BadRequest" } else { "Forbidden" }).with_code(code);
    resp
}

fn deny_problem(resp: AdmissionResponse, p: &Problem) -> AdmissionResponse {
    deny(resp, 403, format!("{}: {}", p.field, p.message))
}

fn action(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "create",
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::Connect => "connect",
    }
}

fn review_trigger_authentication(
    req: &AdmissionRequest<DynamicObject>,
    resp: AdmissionResponse,
) -> AdmissionResponse {
    // The kind decides whether filePath is allowed, so never trust an object without one.
    let value = match object_of_request_kind(req) {
        Ok(v) => v,
        Err(message) => return deny(resp, 400, message),
    };
    answer_problems(req, resp, &validate_trigger_authentication(&value))
}

/// HTTPScaledObject and InterceptorRoute: what the add-on's schema, CEL rules and operator
/// refuse, plus ebb's rate checks ([`validate_http_document`]).
fn review_http_add_on(req: &AdmissionRequest<DynamicObject>, resp: AdmissionResponse) -> AdmissionResponse {
    // The request's kind decides how the object is read, whatever the body says.
    let mut value = match object_of_request_kind(req) {
        Ok(v) => v,
        Err(message) => return deny(resp, 400, message),
    };
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            Value::String(format!("{}/{}", req.kind.group, req.kind.version)),
        );
    }
    answer_problems(req, resp, &validate_http_document(&value).unwrap_or_default())
}

/// The request's object as JSON with `kind` set from the request (the message when there is
/// none or it cannot be read).
fn object_of_request_kind(req: &AdmissionRequest<DynamicObject>) -> Result<Value, String> {
    let obj = req
        .object
        .as_ref()
        .ok_or_else(|| "request has no object".to_string())?;
    let mut value =
        serde_json::to_value(obj).map_err(|e| format!("could not read {}: {e}", req.kind.kind))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("kind".into(), Value::String(req.kind.kind.clone()));
    }
    Ok(value)
}

/// Logs `problems` and denies with the first, or allows.
fn answer_problems(
    req: &AdmissionRequest<DynamicObject>,
    resp: AdmissionResponse,
    problems: &[Problem],
) -> AdmissionResponse {
    log_problems(req, problems);
    match problems.first() {
        Some(p) => deny_problem(resp, p),
        None => resp,
    }
}

fn log_problems(req: &AdmissionRequest<DynamicObject>, problems: &[Problem]) {
    for p in problems {
        info!(
            kind = %req.kind.kind,
            namespace = req.namespace.as_deref().unwrap_or_default(),
            name = %req.name,
            uid = %req.uid,
            field = %p.field,
            reason = p.reason,
            message = %p.message,
            "admission problem"
        );
    }
}

/// The request's object decoded as `K`, with the namespace and name the request knows (absent
/// from objects under creation with generateName or from kubectl without -n). `None` for an
/// UPDATE that only drops finalizers with an unchanged spec (a deletion going through), which is
/// allowed unchecked; `Err` (a 400) for a missing or undecodable object.
fn decode_for_review<K, S>(
    req: &AdmissionRequest<DynamicObject>,
    kind: &str,
    spec: fn(&K) -> &S,
) -> Result<Option<K>, String>
where
    K: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    S: PartialEq,
{
    let decode = |obj: &DynamicObject| {
        serde_json::to_value(obj)
            .and_then(serde_json::from_value::<K>)
            .map_err(|e| format!("could not decode {kind}: {e}"))
    };
    let Some(obj) = req.object.as_ref() else {
        return Err("request has no object".to_string());
    };
    let mut new = decode(obj)?;
    let meta = new.meta_mut();
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = req.namespace.clone();
    }
    if meta.name.as_deref().is_none_or(str::is_empty) && !req.name.is_empty() {
        meta.name = Some(req.name.clone());
    }
    if matches!(req.operation, Operation::Update)
        && let Some(old) = req.old_object.as_ref().and_then(|o| decode(o).ok())
        && spec(&old) == spec(&new)
        && only_removes_finalizers(old.meta(), new.meta())
    {
        return Ok(None);
    }
    Ok(Some(new))
}

async fn review_scaled_object(
    req: &AdmissionRequest<DynamicObject>,
    resp: AdmissionResponse,
    ctx: &WebhookContext,
) -> AdmissionResponse {
    let so = match decode_for_review(req, "ScaledObject", |so: &ScaledObject| &so.spec) {
        Ok(Some(so)) => so,
        Ok(None) => return resp,
        Err(m) => return deny(resp, 400, m),
    };
    let namespace = so.metadata.namespace.clone().unwrap_or_default();
    let act = action(&req.operation);
    ctx.metrics.record_webhook_validation(&namespace, act);

    let mut problems = validate_scaled_object(&so);
    match cluster_problems(&so, req.dry_run, ctx.cluster.as_ref()).await {
        Ok(p) => problems.extend(p),
        Err(e) => {
            warn!(error = %e, namespace, name = %req.name, "cluster lookup failed during admission");
            ctx.metrics
                .record_webhook_validation_error(&namespace, act, "cluster-lookup");
            return deny(resp, 500, format!("could not validate the ScaledObject: {e}"));
        }
    }
    log_problems(req, &problems);
    if let Some(p) = problems.first() {
        ctx.metrics
            .record_webhook_validation_error(&namespace, act, p.reason);
        return deny_problem(resp, p);
    }
    let w = warnings(&so);
    for warning in &w {
        info!(namespace, name = %req.name, uid = %req.uid, warning = %warning, "admission warning");
    }
    if w.is_empty() {
        resp
    } else {
        let mut resp = resp;
        resp.warnings = Some(w);
        resp
    }
}

/// KEDA lets the finalizer removal through untouched, so deletion never hangs on the webhook.
fn only_removes_finalizers(old: &ObjectMeta, new: &ObjectMeta) -> bool {
    let old_f = old.finalizers.as_deref().unwrap_or_default();
    let new_f = new.finalizers.as_deref().unwrap_or_default();
    new_f.len() < old_f.len() && new_f.iter().all(|f| old_f.contains(f))
}

/// Admission warnings: deprecated settings KEDA 2.17 still accepts, then (§14) settings that
/// have no effect while the workload never scales to zero.
pub fn warnings(so: &ScaledObject) -> Vec<String> {
    let spec = &so.spec;
    let mut out: Vec<String> = deprecations(so)
        .into_iter()
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect();
    let min_positive = spec.min_replica_count.is_some_and(|m| m > 0);
    let idle_unset = spec.idle_replica_count.is_none();
    let cached = spec.triggers.iter().any(|t| t.use_cached_metrics == Some(true));
    if spec.polling_interval.is_some() && min_positive && idle_unset && !cached {
        out.push(
            "spec.pollingInterval has no effect when minReplicaCount > 0 and no trigger uses cached metrics: the HPA polls the metrics itself"
                .to_string(),
        );
    }
    if spec.cooldown_period.is_some() && min_positive && idle_unset {
        out.push(
            "spec.cooldownPeriod only applies when scaling to zero; with minReplicaCount > 0 it has no effect (use advanced.horizontalPodAutoscalerConfig.behavior)"
                .to_string(),
        );
    }
    out
}

/// The target's `<apiVersion>.<kind>`, defaulting as KEDA does to `apps/v1.Deployment`.
pub fn target_gvk(api_version: Option<&str>, kind: Option<&str>) -> String {
    let api = api_version.filter(|s| !s.is_empty()).unwrap_or("apps/v1");
    let kind = kind.filter(|s| !s.is_empty()).unwrap_or("Deployment");
    format!("{api}.{kind}")
}

fn so_gvk(so: &ScaledObject) -> String {
    let r = &so.spec.scale_target_ref;
    target_gvk(r.api_version.as_deref(), r.kind.as_deref())
}

fn hpa_gvk(hpa: &HorizontalPodAutoscaler) -> Option<(String, String)> {
    let r = &hpa.spec.as_ref()?.scale_target_ref;
    Some((
        r.name.clone(),
        target_gvk(r.api_version.as_deref(), Some(r.kind.as_str())),
    ))
}

/// The checks that read the cluster: duplicate target, duplicate HPA name, foreign HPA, and
/// container resources for cpu/memory triggers (skipped on dry-run, as KEDA does).
pub async fn cluster_problems(
    so: &ScaledObject,
    dry_run: bool,
    cluster: &dyn ClusterView,
) -> Result<Vec<Problem>, ClusterError> {
    let mut out = Vec::new();
    let ns = so.metadata.namespace.as_deref().unwrap_or("default");
    let name = so.metadata.name.as_deref().unwrap_or_default();
    let target = so.spec.scale_target_ref.name.as_str();
    let gvk = so_gvk(so);
    let our_hpa = hpa_name(so);

    let r = &so.spec.scale_target_ref;
    let api_version = r.api_version_or_default();
    let kind = r.kind_or_default();
    if !cluster.serves_kind(api_version, kind).await? {
        // KEDA resolves the target through its REST mapper first; nothing else is checked.
        return Ok(vec![Problem {
            field: "spec.scaleTargetRef".into(),
            message: format!("no matches for kind \"{kind}\" in version \"{api_version}\""),
            reason: "scale-target-kind",
        }]);
    }

    for other in cluster.scaled_objects(ns).await? {
        let other_name = other.metadata.name.as_deref().unwrap_or_default();
        if other_name == name {
            continue;
        }
        if other.spec.scale_target_ref.name == target && so_gvk(&other) == gvk {
            out.push(Problem {
                field: "spec.scaleTargetRef.name".into(),
                message: format!(
                    "the workload '{target}' of type '{gvk}' is already managed by the ScaledObject '{other_name}'"
                ),
                reason: "other-scaled-object",
            });
        }
        if hpa_name(&other) == our_hpa {
            out.push(Problem {
                field: "spec.advanced.horizontalPodAutoscalerConfig.name".into(),
                message: format!("the HPA '{our_hpa}' is already managed by the ScaledObject '{other_name}'"),
                reason: "other-scaled-object-hpa",
            });
        }
    }

    for hpa in cluster.hpas(ns).await? {
        let Some((hpa_target, hpa_target_gvk)) = hpa_gvk(&hpa) else {
            continue;
        };
        if hpa_target != target || hpa_target_gvk != gvk {
            continue;
        }
        let hpa_n = hpa.metadata.name.as_deref().unwrap_or_default();
        let owned = hpa
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "ScaledObject" && o.name == name);
        let opted_out = annotation(&hpa.metadata.annotations, HPA_OWNERSHIP_ANNOTATION) == Some("false");
        if owned || opted_out {
            continue;
        }
        if annotation(&so.metadata.annotations, TRANSFER_HPA_OWNERSHIP_ANNOTATION) == Some("true") {
            if custom_hpa_name(so) == Some(hpa_n) {
                continue;
            }
            out.push(Problem {
                field: "spec.advanced.horizontalPodAutoscalerConfig.name".into(),
                message: format!(
                    "the workload '{target}' of type '{gvk}' is already managed by the hpa '{hpa_n}', which must be specified by name in advanced settings to enable ownership transfer"
                ),
                reason: "transfer-ownership-missing-hpa-name",
            });
        } else {
            out.push(Problem {
                field: "spec.scaleTargetRef.name".into(),
                message: format!(
                    "the workload '{target}' of type '{gvk}' is already managed by the hpa '{hpa_n}'"
                ),
                reason: "other-hpa",
            });
        }
    }

    if !dry_run {
        out.extend(resource_problems(so, ns, &gvk, cluster).await?);
    }
    Ok(out)
}

fn annotation<'a>(a: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    a.as_ref()?.get(key).map(String::as_str)
}

fn custom_hpa_name(so: &ScaledObject) -> Option<&str> {
    so.spec
        .advanced
        .as_ref()?
        .horizontal_pod_autoscaler_config
        .as_ref()?
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
}

fn positive(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    res: &str,
) -> bool {
    map.and_then(|m| m.get(res))
        .and_then(|q| quantity::parse(&q.0).ok())
        .is_some_and(|q| q > quantity::Quantity::ZERO)
}

fn limit_range_default(ranges: &[LimitRange], res: &str) -> bool {
    ranges
        .iter()
        .filter_map(|r| r.spec.as_ref())
        .flat_map(|s| s.limits.iter())
        .filter(|l| l.type_ == "Container")
        .any(|l| positive(l.default.as_ref(), res) || positive(l.default_request.as_ref(), res))
}

/// Every cpu/memory trigger needs a request or limit on the containers it measures, else the
/// HPA cannot compute utilization.
async fn resource_problems(
    so: &ScaledObject,
    ns: &str,
    gvk: &str,
    cluster: &dyn ClusterView,
) -> Result<Vec<Problem>, ClusterError> {
    let mut out = Vec::new();
    let kind = match gvk {
        "apps/v1.Deployment" => "Deployment",
        "apps/v1.StatefulSet" => "StatefulSet",
        _ => return Ok(out),
    };
    let triggers: Vec<(usize, &str, Option<&str>)> = so
        .spec
        .triggers
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.type_.as_str(), "cpu" | "memory"))
        .map(|(i, t)| {
            let container = t
                .metadata
                .get("containerName")
                .map(String::as_str)
                .filter(|c| !c.is_empty());
            (i, t.type_.as_str(), container)
        })
        .collect();
    if triggers.is_empty() {
        return Ok(out);
    }
    let target = so.spec.scale_target_ref.name.as_str();
    let Some(template) = cluster.pod_template(ns, kind, target).await? else {
        let resource = if kind == "Deployment" {
            "deployments"
        } else {
            "statefulsets"
        };
        out.push(Problem {
            field: "spec.scaleTargetRef.name".into(),
            message: format!("{resource}.apps \"{target}\" not found"),
            reason: "missing-requests",
        });
        return Ok(out);
    };
    let containers = template.spec.map(|s| s.containers).unwrap_or_default();
    let mut ranges: Option<Vec<LimitRange>> = None;
    for (i, res, only) in triggers {
        for c in containers.iter().filter(|c| only.is_none_or(|n| n == c.name)) {
            let r = c.resources.as_ref();
            if positive(r.and_then(|r| r.requests.as_ref()), res)
                || positive(r.and_then(|r| r.limits.as_ref()), res)
            {
                continue;
            }
            if ranges.is_none() {
                ranges = Some(cluster.limit_ranges(ns).await?);
            }
            if ranges.as_deref().is_some_and(|lr| limit_range_default(lr, res)) {
                continue;
            }
            out.push(Problem {
                field: format!("spec.triggers[{i}]"),
                message: format!(
                    "the scaledobject has a {res} trigger but the container {} doesn't have the {res} request defined",
                    c.name
                ),
                reason: "missing-requests",
            });
        }
    }
    Ok(out)
}

/// Reviews a ScaledJob CREATE or UPDATE with `ebb check`'s rules (schema, KEDA's
/// `ValidateTriggers`, reconciler and Job API refusals); KEDA counts a refusal in the
/// ScaledObject error counter (`reason="incorrect-triggers"`) and keeps no total for ScaledJobs.
fn review_scaled_job(
    req: &AdmissionRequest<DynamicObject>,
    resp: AdmissionResponse,
    ctx: &WebhookContext,
) -> AdmissionResponse {
    let sj = match decode_for_review(req, "ScaledJob", |sj: &ScaledJob| &sj.spec) {
        Ok(Some(sj)) => sj,
        Ok(None) => return resp,
        Err(m) => return deny(resp, 400, m),
    };
    let problems = validate_scaled_job(&sj);
    log_problems(req, &problems);
    match problems.first() {
        Some(p) => {
            let namespace = sj.metadata.namespace.clone().unwrap_or_default();
            ctx.metrics
                .record_webhook_validation_error(&namespace, action(&req.operation), p.reason);
            deny_problem(resp, p)
        }
        None => resp,
    }
}

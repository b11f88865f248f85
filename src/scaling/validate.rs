//! Checks KEDA's admission webhook and reconcile perform that need no cluster lookups.
//!
//! Unlike the webhook, which stops at the first failing check (in Go map order), every problem
//! is reported, so `ebb check` can list them all. Checks that need the cluster (duplicate targets,
//! foreign HPAs, container resource requests) are the webhook's job, not this module's.

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

use crate::{
    crd::{
        ScaledObject,
        scaled_object::{DEFAULT_MAX_REPLICAS, MetricTargetType, ScaleTrigger, ScaledObjectSpec},
    },
    scalers::{
        ScalerConfig, ScalerError, build_scaler, cpu_memory, http_auth, params::Source,
        registry::trigger_config,
    },
    scaling::{activation::pause_state, formula, hpa::hpa_name},
};

/// One validation finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path of the offending field, e.g. `spec.triggers[1].metadata.query`.
    pub field: String,
    /// KEDA's message.
    pub message: String,
    /// KEDA webhook metric reason, e.g. `incorrect-replicas`. Checks KEDA only runs at reconcile
    /// (building scalers, paused-replicas, target name) reuse the closest webhook reason.
    pub reason: &'static str,
}

impl Problem {
    fn new(field: impl Into<String>, message: impl Into<String>, reason: &'static str) -> Self {
        Problem {
            field: field.into(),
            message: message.into(),
            reason,
        }
    }
}

/// Longest name usable as a label value (SO name) or object name we label with (HPA name).
pub const MAX_NAME_LENGTH: usize = 63;

/// All problems KEDA would report for this ScaledObject without looking at the cluster.
pub fn validate_scaled_object(so: &ScaledObject) -> Vec<Problem> {
    validate_scaled_object_with(so, &|_| None)
}

/// A trigger's scaler as built with its TriggerAuthentication and environment resolved, when
/// the caller could resolve them (`ebb check` with the referenced objects in its files).
pub type ResolvedBuild = Option<Result<(), ScalerError>>;

/// [`validate_scaled_object`], with `resolved(i)` giving trigger `i`'s build outcome when its
/// authentication could be resolved; `None` checks it offline, as the webhook does.
pub fn validate_scaled_object_with(
    so: &ScaledObject,
    resolved: &dyn Fn(usize) -> ResolvedBuild,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let spec = &so.spec;
    let name = so.metadata.name.as_deref().unwrap_or_default();

    if spec.scale_target_ref.name.is_empty() {
        out.push(Problem::new(
            "spec.scaleTargetRef.name",
            "ScaledObject.spec.scaleTargetRef.name is missing",
            "incorrect-target",
        ));
    }
    if let Err(e) = pause_state(so.metadata.annotations.as_ref()).paused_replica_count() {
        out.push(Problem::new(
            "metadata.annotations[autoscaling.keda.sh/paused-replicas]",
            e.to_string(),
            "incorrect-annotation",
        ));
    }
    if let Err(p) = check_replica_bounds(spec) {
        out.push(p);
    }
    if name.len() > MAX_NAME_LENGTH {
        out.push(Problem::new(
            "metadata.name",
            format!("ScaledObject name must be no more than {MAX_NAME_LENGTH} characters"),
            "name-too-long",
        ));
    }
    let hpa = hpa_name(so);
    if hpa.len() > MAX_NAME_LENGTH {
        let custom = spec
            .advanced
            .as_ref()
            .and_then(|a| a.horizontal_pod_autoscaler_config.as_ref())
            .and_then(|c| c.name.as_deref())
            .is_some_and(|n| !n.is_empty());
        out.push(Problem::new(
            if custom {
                "spec.advanced.horizontalPodAutoscalerConfig.name"
            } else {
                "metadata.name"
            },
            format!(
                "HPA name {hpa:?} is longer than {MAX_NAME_LENGTH} characters; set a shorter spec.advanced.horizontalPodAutoscalerConfig.name"
            ),
            "hpa-name-too-long",
        ));
    }
    out.extend(check_triggers(spec));
    out.extend(check_scale_to_zero(spec));
    out.extend(check_fallback(spec));
    out.extend(check_scaling_modifiers(spec));
    for (i, t) in spec.triggers.iter().enumerate() {
        out.extend(check_trigger_metadata(so, i, t, resolved(i)));
    }
    out
}

/// Settings KEDA 2.17 accepts but has deprecated, as warnings (admission `warnings`, an event
/// and a log line from reconcile, `ebb check` output); `reason` is `deprecated`.
pub fn deprecations(so: &ScaledObject) -> Vec<Problem> {
    so.spec
        .triggers
        .iter()
        .enumerate()
        .filter(|(_, t)| is_resource(t) && t.metadata.get("type").is_some_and(|v| !v.trim().is_empty()))
        .map(|(i, _)| {
            Problem::new(
                format!("spec.triggers[{i}].metadata.type"),
                cpu_memory::TYPE_DEPRECATED,
                "deprecated",
            )
        })
        .collect()
}

/// KEDA's replica-count bounds check (§2.6), shared by the webhook and reconcile.
///
/// An explicit `minReplicaCount: 0` counts as 1 here, exactly as in KEDA.
pub fn check_replica_bounds(spec: &ScaledObjectSpec) -> Result<(), Problem> {
    let min = spec.min_replica_count.map_or(0, |m| m.max(1));
    let max = spec.max_replica_count.unwrap_or(DEFAULT_MAX_REPLICAS);
    if min > max {
        return Err(Problem::new(
            "spec.minReplicaCount",
            format!("MinReplicaCount={min} must be less than MaxReplicaCount={max}"),
            "incorrect-replicas",
        ));
    }
    if let Some(idle) = spec.idle_replica_count
        && idle >= min
    {
        return Err(Problem::new(
            "spec.idleReplicaCount",
            format!("IdleReplicaCount={idle} must be less than MinReplicaCount={min}"),
            "incorrect-replicas",
        ));
    }
    Ok(())
}

fn is_resource(t: &ScaleTrigger) -> bool {
    matches!(t.type_.as_str(), "cpu" | "memory")
}

/// ≥1 trigger, unique names, useCachedMetrics restrictions (KEDA's `ValidateTriggers`).
fn check_triggers(spec: &ScaledObjectSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    if spec.triggers.is_empty() {
        out.push(Problem::new(
            "spec.triggers",
            "no triggers defined in the ScaledObject/ScaledJob",
            "incorrect-triggers",
        ));
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, t) in spec.triggers.iter().enumerate() {
        if t.use_cached_metrics == Some(true) && matches!(t.type_.as_str(), "cpu" | "memory" | "cron") {
            out.push(Problem::new(
                format!("spec.triggers[{i}].useCachedMetrics"),
                format!(
                    "property \"useCachedMetrics\" is not supported for {:?} scaler",
                    t.type_
                ),
                "incorrect-triggers",
            ));
        }
        if let Some(n) = t.name.as_deref().filter(|n| !n.is_empty()) {
            if names.contains(&n) {
                out.push(Problem::new(
                    format!("spec.triggers[{i}].name"),
                    format!(
                        "triggerName {n:?} is defined multiple times in the ScaledObject/ScaledJob, but it must be unique"
                    ),
                    "incorrect-triggers",
                ));
            }
            names.push(n);
        }
        if t.type_.is_empty() {
            out.push(Problem::new(
                format!("spec.triggers[{i}].type"),
                "trigger type is required",
                "incorrect-triggers",
            ));
        }
    }
    out
}

/// Only cpu/memory triggers cannot scale to zero; KEDA checks this for Deployments and StatefulSets only.
fn check_scale_to_zero(spec: &ScaledObjectSpec) -> Option<Problem> {
    let r = &spec.scale_target_ref;
    let api = r.api_version_or_default();
    let kind = r.kind_or_default();
    let workload = api == "apps/v1" && matches!(kind, "Deployment" | "StatefulSet");
    let only_resources = !spec.triggers.is_empty() && spec.triggers.iter().all(is_resource);
    (workload && only_resources && spec.min_replica_count.unwrap_or(0) == 0).then(|| {
        Problem::new(
            "spec.minReplicaCount",
            "scaledobject has only cpu/memory triggers AND minReplica is 0 (scale to zero doesn't work in this case)",
            "scale-to-zero-requirements-not-met",
        )
    })
}

const FALLBACK_BEHAVIORS: &[&str] = &[
    "static",
    "currentReplicas",
    "currentReplicasIfHigher",
    "currentReplicasIfLower",
    "scalingModifiers",
];

/// KEDA's `CheckFallbackValid` plus the scalingModifiers-behavior rule and the CRD enum.
fn check_fallback(spec: &ScaledObjectSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(f) = spec.fallback.as_ref() else {
        return out;
    };
    if f.failure_threshold < 0 || f.replicas < 0 {
        out.push(Problem::new(
            "spec.fallback",
            format!(
                "FailureThreshold={} & Replicas={} must both be greater than or equal to 0",
                f.failure_threshold, f.replicas
            ),
            "incorrect-fallback",
        ));
    }
    // KEDA's message mentions AverageValue but only the trigger type is actually checked.
    if !spec.uses_scaling_modifiers() && !spec.triggers.iter().any(|t| !is_resource(t)) {
        out.push(Problem::new(
            "spec.fallback",
            "at least one trigger (that is not cpu or memory) has to be defined with the `AverageValue` type for the fallback to be enabled",
            "incorrect-fallback",
        ));
    }
    match f.behavior.as_deref() {
        None | Some("") => {}
        Some(b) if !FALLBACK_BEHAVIORS.contains(&b) => out.push(Problem::new(
            "spec.fallback.behavior",
            format!(
                "Unsupported value: {b:?}: supported values: {}",
                FALLBACK_BEHAVIORS
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "incorrect-fallback",
        )),
        Some("scalingModifiers") => {
            let has_formula = spec
                .advanced
                .as_ref()
                .and_then(|a| a.scaling_modifiers.as_ref())
                .and_then(|m| m.formula.as_deref())
                .is_some_and(|s| !s.is_empty());
            if !has_formula {
                out.push(Problem::new(
                    "spec.fallback.behavior",
                    "scalingModifiers fallback behavior requires scalingModifiers.formula to be defined",
                    "scaling-modifiers-fallback",
                ));
            }
        }
        Some(_) => {}
    }
    out
}

/// §10.2: formula present, compiles against named non-cpu/memory triggers and runs with all = -1;
/// target a positive float; metricType not Utilization.
fn check_scaling_modifiers(spec: &ScaledObjectSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    if !spec.uses_scaling_modifiers() {
        return out;
    }
    let Some(m) = spec.advanced.as_ref().and_then(|a| a.scaling_modifiers.as_ref()) else {
        return out;
    };
    const BASE: &str = "spec.advanced.scalingModifiers";
    let reason = "scaling-modifiers";
    let formula_text = m.formula.as_deref().unwrap_or_default();
    if formula_text.is_empty() {
        out.push(Problem::new(
            format!("{BASE}.formula"),
            "error ScalingModifiers.Formula is mandatory",
            reason,
        ));
    } else {
        let vars: Vec<&str> = spec
            .triggers
            .iter()
            .filter(|t| !is_resource(t))
            .filter_map(|t| t.name.as_deref())
            .filter(|n| !n.is_empty())
            .collect();
        let result = formula::compile(formula_text, &vars).and_then(|f| {
            let values = vars.iter().map(|v| (v.to_string(), Some(-1.0))).collect();
            f.eval(&values)
        });
        if let Err(e) = result {
            out.push(Problem::new(
                format!("{BASE}.formula"),
                format!("error validating formula in ScalingModifiers: {e}"),
                reason,
            ));
        }
    }
    let target = m.target.as_deref().unwrap_or_default();
    if target.is_empty() {
        out.push(Problem::new(
            format!("{BASE}.target"),
            "formula is given but target is empty",
            reason,
        ));
    } else {
        match target.trim().parse::<f64>() {
            Err(e) => out.push(Problem::new(
                format!("{BASE}.target"),
                format!("error converting target for scalingModifiers (string->float) to valid target: {e}"),
                reason,
            )),
            Ok(t) if t.is_nan() || t <= 0.0 => out.push(Problem::new(
                format!("{BASE}.target"),
                "target for scalingModifiers is smaller or equal to 0",
                reason,
            )),
            Ok(_) => {}
        }
    }
    if m.metric_type == Some(MetricTargetType::Utilization) {
        out.push(Problem::new(
            format!("{BASE}.metricType"),
            "error trigger type is Utilization, but it needs to be AverageValue or Value for external metrics",
            reason,
        ));
    }
    out
}

/// Builds the trigger's scaler the way reconcile does and reports its error, pointing at the
/// metadata key the message names when there is one. Without `resolved`, the build is offline:
/// credentials a TriggerAuthentication would give are placeholders, and a required parameter
/// is not called missing when KEDA could still read it from the TriggerAuthentication
/// (`authParams`) or from the target's environment (a present `<name>FromEnv` key).
fn check_trigger_metadata(
    so: &ScaledObject,
    i: usize,
    t: &ScaleTrigger,
    resolved: ResolvedBuild,
) -> Vec<Problem> {
    let field = |suffix: &str| format!("spec.triggers[{i}].{suffix}");
    let reason = "incorrect-triggers";
    if t.type_.is_empty() {
        return Vec::new();
    }
    if is_resource(t) {
        return match cpu_memory::parse_target(&t.metadata, t.metric_type) {
            Ok(_) => Vec::new(),
            Err(e) => vec![Problem::new(field(e.field), e.message, reason)],
        };
    }
    if t.metric_type == Some(MetricTargetType::Utilization) {
        return vec![Problem::new(
            field("metricType"),
            "'Utilization' metric type is unsupported for external metrics, allowed values are 'Value' or 'AverageValue'",
            reason,
        )];
    }
    let built = match resolved {
        Some(r) => r,
        None => {
            let config = offline_scaler_config_assuming_sources(so, i, t);
            match build_scaler(&config, &Default::default()) {
                Err(ScalerError::MissingParameter { name, sources })
                    if supplied_elsewhere(t, &name, &sources) =>
                {
                    Ok(())
                }
                Err(e) if t.authentication_ref.is_some() && http_auth::is_missing_credential(&e) => Ok(()),
                other => other.map(|_| ()),
            }
        }
    };
    match built {
        Ok(()) => Vec::new(),
        Err(e @ ScalerError::UnknownType(_)) => vec![Problem::new(field("type"), e.to_string(), reason)],
        Err(e) => {
            let message = e.to_string();
            let key = match &e {
                ScalerError::MissingParameter { name, .. } => Some(name.clone()),
                _ => named_key(&message, &t.metadata),
            };
            let f = key.map_or_else(|| field("metadata"), |k| field(&format!("metadata.{k}")));
            vec![Problem::new(f, message, reason)]
        }
    }
}

/// True when KEDA could read a missing parameter from a source offline validation cannot see:
/// the TriggerAuthentication of a trigger with an `authenticationRef`, or the environment
/// variable a `<name>FromEnv` key names.
fn supplied_elsewhere(t: &ScaleTrigger, name: &str, sources: &[Source]) -> bool {
    (sources.contains(&Source::AuthParams) && t.authentication_ref.is_some())
        || (sources.contains(&Source::ResolvedEnv)
            && t.metadata
                .get(&format!("{name}FromEnv"))
                .is_some_and(|v| !v.trim().is_empty()))
}

/// Credentials a TriggerAuthentication commonly supplies, filled with placeholders offline.
const PLACEHOLDER_AUTH_KEYS: &[&str] = &[
    "awsAccessKeyID",
    "awsSecretAccessKey",
    "bearerToken",
    "username",
    "password",
    "apiKey",
    "customAuthHeader",
    "customAuthValue",
];

/// [`offline_scaler_config`] plus placeholder credentials when the trigger has an
/// `authenticationRef`, so the rest of its metadata is still checked and its metric specs can be
/// rendered without the cluster (KEDA's webhook does not resolve TriggerAuthentications either).
pub fn offline_scaler_config_assuming_sources(so: &ScaledObject, i: usize, t: &ScaleTrigger) -> ScalerConfig {
    let mut config = offline_scaler_config(so, i, t);
    if t.authentication_ref.is_some() {
        for key in PLACEHOLDER_AUTH_KEYS {
            if !t.metadata.contains_key(*key) {
                config
                    .auth_params
                    .insert((*key).to_string(), "offline-placeholder".to_string());
            }
        }
    }
    config
}

/// The `ScalerConfig` for trigger `i` as reconcile would build it, minus what needs the cluster
/// (TriggerAuthentication parameters and the target container's env stay empty).
pub fn offline_scaler_config(so: &ScaledObject, i: usize, _t: &ScaleTrigger) -> ScalerConfig {
    trigger_config(so, i, Duration::from_millis(3000))
}

/// The metadata key an error message is about: a quoted name, `error parsing X`, `no X given`,
/// or any word that is a key of the trigger's metadata.
fn named_key(message: &str, metadata: &BTreeMap<String, String>) -> Option<String> {
    let is_name = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    // A quoted word names the key when it is one, or when the message is about a parameter
    // (`missing required parameter "url"`); a quoted value (`invalid integer "five"`) does not.
    if let Some(rest) = message.split('"').nth(1)
        && is_name(rest)
        && (metadata.contains_key(rest) || message.contains("parameter"))
    {
        return Some(rest.to_string());
    }
    for prefix in ["error parsing ", "no "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `error parsing cron metadata: ...` names the scaler, not a key.
            let about_scaler = rest[word.len()..].starts_with(" metadata");
            if is_name(&word)
                && !about_scaler
                && (metadata.contains_key(&word) || (prefix == "no " && rest.contains(" given")))
            {
                return Some(word);
            }
        }
    }
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| metadata.contains_key(*w))
        .map(str::to_string)
}

/// Webhook rules for a TriggerAuthentication or ClusterTriggerAuthentication document (§11.1),
/// on raw JSON. `kind` decides whether `filePath` is allowed.
pub fn validate_trigger_authentication(value: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default();
    let spec = value.get("spec").unwrap_or(&Value::Null);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);

    if let Some(path) = s(spec, "filePath") {
        if kind != "ClusterTriggerAuthentication" {
            out.push(Problem::new(
                "spec.filePath",
                "filePath is only supported on ClusterTriggerAuthentication",
                "incorrect-file-path",
            ));
        } else if path.starts_with('/') || path.split('/').any(|p| p == "..") {
            out.push(Problem::new(
                "spec.filePath",
                "filePath must be a relative path without '..'",
                "incorrect-file-path",
            ));
        }
    }

    if let Some(pi) = spec.get("podIdentity").filter(|v| v.is_object()) {
        let provider = s(pi, "provider").unwrap_or_default();
        let reason = "incorrect-pod-identity";
        match provider.as_str() {
            "azure-workload" => {
                if s(pi, "identityId").is_some_and(|v| v.is_empty()) {
                    out.push(Problem::new(
                        "spec.podIdentity.identityId",
                        "identityId of PodIdentity should not be empty. If it's set, identityId has to be different than \"\".",
                        reason,
                    ));
                }
                let tenant = s(pi, "identityTenantId");
                if s(pi, "identityAuthorityHost").is_some_and(|v| !v.is_empty())
                    && tenant.as_deref().is_none_or(str::is_empty)
                {
                    out.push(Problem::new(
                        "spec.podIdentity.identityTenantId",
                        "identityTenantId of PodIdentity must be set if identityAuthorityHost is set",
                        reason,
                    ));
                } else if tenant.is_some_and(|v| v.is_empty()) {
                    out.push(Problem::new(
                        "spec.podIdentity.identityTenantId",
                        "identityTenantId of PodIdentity should not be empty. If it's set, identityTenantId has to be different than \"\".",
                        reason,
                    ));
                }
            }
            "aws" => {
                let role = s(pi, "roleArn").filter(|v| !v.is_empty());
                if role.is_some() && s(pi, "identityOwner").as_deref() == Some("workload") {
                    out.push(Problem::new(
                        "spec.podIdentity.roleArn",
                        "roleArn of PodIdentity can't be set if KEDA isn't identityOwner",
                        reason,
                    ));
                }
                if s(pi, "externalID").is_some_and(|v| !v.is_empty()) && role.is_none() {
                    out.push(Problem::new(
                        "spec.podIdentity.externalID",
                        "externalID of PodIdentity requires roleArn to be set",
                        reason,
                    ));
                }
            }
            // KEDA's validator returns early here and never reaches the oauth2 checks.
            _ => return out,
        }
    }

    if let Some(o) = spec.get("oauth2").filter(|v| v.is_object()) {
        let reason = "incorrect-oauth2";
        if s(o, "type").as_deref() != Some("clientCredentials") {
            out.push(Problem::new(
                "spec.oauth2.type",
                format!(
                    "unsupported oauth2 type {:?}, only clientCredentials is supported",
                    s(o, "type").unwrap_or_default()
                ),
                reason,
            ));
        }
        if s(o, "clientId").is_none_or(|v| v.is_empty()) {
            out.push(Problem::new(
                "spec.oauth2.clientId",
                "oauth2 clientId is required",
                reason,
            ));
        }
        match s(o, "tokenUrl").filter(|v| !v.is_empty()) {
            None => out.push(Problem::new(
                "spec.oauth2.tokenUrl",
                "oauth2 tokenUrl is required",
                reason,
            )),
            Some(u) => {
                let ok = reqwest::Url::parse(&u)
                    .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
                if !ok {
                    out.push(Problem::new(
                        "spec.oauth2.tokenUrl",
                        format!("oauth2 tokenUrl {u:?} must be an absolute http or https URL"),
                        reason,
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn so(spec: &str) -> ScaledObject {
        serde_yaml::from_str(&format!("metadata: {{name: app, namespace: ns}}\nspec:\n{spec}"))
            .expect("fixture parses")
    }

    fn messages(spec: &str) -> Vec<(String, String, &'static str)> {
        validate_scaled_object(&so(spec))
            .into_iter()
            .map(|p| (p.field, p.message, p.reason))
            .collect()
    }

    const CRON: &str = "{type: cron, metadata: {timezone: Etc/UTC, start: '0 * * * *', end: '30 * * * *', desiredReplicas: '2'}}";

    #[test]
    fn clean_object_has_no_problems() {
        assert_eq!(
            messages(&format!("  scaleTargetRef: {{name: t}}\n  triggers: [{CRON}]")),
            vec![]
        );
    }

    #[test]
    fn credentials_from_a_trigger_authentication_are_not_called_missing() {
        let sqs = |extra: &str, queue_length: &str| {
            messages(&format!(
                "  scaleTargetRef: {{name: t}}\n  triggers: [{{type: aws-sqs-queue, {extra}metadata: {{queueURL: 'https://sqs.eu-west-1.amazonaws.com/1/q', queueLength: '{queue_length}', awsRegion: eu-west-1}}}}]"
            ))
        };
        assert_eq!(sqs("authenticationRef: {name: aws}, ", "5"), vec![]);
        // Without a TriggerAuthentication the keys are really missing, as KEDA says.
        let m = sqs("", "5");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].1.contains("awsAccessKeyID not found"), "{m:?}");
        // The rest of the metadata is still checked.
        let m = sqs("authenticationRef: {name: aws}, ", "five");
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].0, "spec.triggers[0].metadata.queueLength", "{m:?}");
        // A TLS client identity can only come from the TriggerAuthentication.
        assert_eq!(
            messages(
                "  scaleTargetRef: {name: t}\n  triggers: [{type: prometheus, authenticationRef: {name: tls}, metadata: {serverAddress: 'http://p:9090', query: up, threshold: '1', authModes: tls}}]"
            ),
            vec![]
        );
    }

    #[test]
    fn replica_bounds_messages() {
        let m = messages(&format!(
            "  scaleTargetRef: {{name: t}}\n  minReplicaCount: 5\n  maxReplicaCount: 2\n  triggers: [{CRON}]"
        ));
        assert_eq!(
            m,
            vec![(
                "spec.minReplicaCount".into(),
                "MinReplicaCount=5 must be less than MaxReplicaCount=2".into(),
                "incorrect-replicas"
            )]
        );
        let m = messages(&format!(
            "  scaleTargetRef: {{name: t}}\n  idleReplicaCount: 0\n  triggers: [{CRON}]"
        ));
        assert_eq!(m[0].1, "IdleReplicaCount=0 must be less than MinReplicaCount=0");
        // min 0 counts as 1, so idle 0 passes.
        let m = messages(&format!(
            "  scaleTargetRef: {{name: t}}\n  minReplicaCount: 0\n  idleReplicaCount: 0\n  triggers: [{CRON}]"
        ));
        assert_eq!(m, vec![]);
    }

    #[test]
    fn trigger_rules() {
        let m = messages("  scaleTargetRef: {name: t}\n  triggers: []");
        assert_eq!(m[0].1, "no triggers defined in the ScaledObject/ScaledJob");
        let m = messages(
            "  scaleTargetRef: {name: t}\n  triggers:\n  - {type: cron, name: a, useCachedMetrics: true, metadata: {timezone: Etc/UTC, start: '0 * * * *', end: '30 * * * *', desiredReplicas: '2'}}\n  - {type: metrics-api, name: a, metadata: {url: 'http://x', valueLocation: v, targetValue: '1'}}\n  - {type: nope, metadata: {}}\n  - {type: prometheus, metadata: {}}",
        );
        let fields: Vec<&str> = m.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.triggers[0].useCachedMetrics",
                "spec.triggers[1].name",
                "spec.triggers[2].type",
                // A prometheus trigger without metadata is refused now that its scaler exists.
                "spec.triggers[3].metadata.serverAddress"
            ]
        );
        assert_eq!(
            m[0].1,
            "property \"useCachedMetrics\" is not supported for \"cron\" scaler"
        );
        assert!(m[2].1.starts_with("unknown trigger type `nope`"), "{m:?}");
    }

    #[test]
    fn unknown_types_read_as_unsupported_or_typos() {
        let m = messages(
            "  scaleTargetRef: {name: t}\n  triggers:\n  - {type: kafka, metadata: {}}\n  - {type: metrics-apii, metadata: {}}",
        );
        assert_eq!(m[0].0, "spec.triggers[0].type");
        assert!(
            m[0].1
                .starts_with("KEDA scaler `kafka` is not supported by ebb yet (supported: cron, "),
            "{m:?}"
        );
        assert_eq!(
            m[1].1,
            "unknown trigger type `metrics-apii`; did you mean `metrics-api`?"
        );
    }

    /// KEDA reads `queueURL` from trigger metadata or `queueURLFromEnv`, never from a
    /// TriggerAuthentication, so an authenticationRef does not excuse its absence.
    #[test]
    fn only_parameters_an_outside_source_can_give_are_excused() {
        let sqs = |extra: &str, meta: &str| {
            messages(&format!(
                "  scaleTargetRef: {{name: t}}\n  triggers: [{{type: aws-sqs-queue, {extra}metadata: {{queueLength: '5', awsRegion: eu-west-1{meta}}}}}]"
            ))
        };
        let m = sqs("authenticationRef: {name: aws}, ", "");
        assert_eq!(
            m,
            vec![(
                "spec.triggers[0].metadata.queueURL".to_string(),
                "missing required parameter \"queueURL\" in [triggerMetadata resolvedEnv]".to_string(),
                "incorrect-triggers"
            )]
        );
        // The environment variable named by queueURLFromEnv may hold it.
        assert_eq!(
            sqs("authenticationRef: {name: aws}, ", ", queueURLFromEnv: QUEUE"),
            vec![]
        );
        // awsRegion may come from authParams: excused with an authenticationRef only.
        let cw = |extra: &str| {
            messages(&format!(
                "  scaleTargetRef: {{name: t}}\n  triggers: [{{type: aws-cloudwatch, {extra}metadata: {{namespace: AWS/SQS, metricName: M, dimensionName: d, dimensionValue: v, targetMetricValue: '2', minMetricValue: '0'}}}}]"
            ))
        };
        assert_eq!(cw("authenticationRef: {name: aws}, "), vec![]);
        let m = cw("");
        assert!(m.iter().any(|p| p.1.contains("\"awsRegion\"")), "{m:?}");
    }

    #[test]
    fn deprecated_cpu_memory_type_is_accepted_with_a_warning() {
        let text = "  scaleTargetRef: {name: t}\n  minReplicaCount: 1\n  triggers:\n  - {type: memory, metadata: {type: Utilization, value: '60'}}";
        assert_eq!(messages(text), vec![]);
        let d = deprecations(&so(text));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].field, "spec.triggers[0].metadata.type");
        assert_eq!(
            d[0].message,
            "The 'type' setting is DEPRECATED and will be removed in v2.18 - Use 'metricType' instead."
        );
        // Agreeing keys pass; disagreeing ones are refused.
        assert_eq!(
            messages(
                "  scaleTargetRef: {name: t}\n  minReplicaCount: 1\n  triggers:\n  - {type: cpu, metricType: Utilization, metadata: {type: Utilization, value: '60'}}"
            ),
            vec![]
        );
        let m = messages(
            "  scaleTargetRef: {name: t}\n  minReplicaCount: 1\n  triggers:\n  - {type: cpu, metricType: AverageValue, metadata: {type: Utilization, value: '60'}}",
        );
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].0, "spec.triggers[0].metadata.type");
        assert!(m[0].1.contains("disagree"), "{m:?}");
    }

    #[test]
    fn unknown_cron_timezone_is_refused() {
        let m = messages(
            "  scaleTargetRef: {name: t}\n  triggers: [{type: cron, metadata: {timezone: Europe/Berln, start: '0 * * * *', end: '30 * * * *', desiredReplicas: '2'}}]",
        );
        assert_eq!(
            m,
            vec![(
                "spec.triggers[0].metadata.timezone".to_string(),
                "error parsing cron metadata: unable to load timezone. Error: unknown time zone Europe/Berln"
                    .to_string(),
                "incorrect-triggers"
            )]
        );
    }

    #[test]
    fn scaler_errors_point_at_metadata() {
        let m = messages(
            "  scaleTargetRef: {name: t}\n  triggers:\n  - {type: cron, metadata: {timezone: Etc/UTC, end: '30 * * * *', desiredReplicas: '2'}}",
        );
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].0, "spec.triggers[0].metadata.start");
        let m = messages(
            "  scaleTargetRef: {name: t}\n  triggers:\n  - {type: prometheus, metricType: Utilization, metadata: {}}",
        );
        assert_eq!(m[0].0, "spec.triggers[0].metricType");
    }

    #[test]
    fn cpu_memory_rules() {
        let m =
            messages("  scaleTargetRef: {name: t}\n  triggers:\n  - {type: cpu, metadata: {value: '50'}}");
        let fields: Vec<&str> = m.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            fields,
            vec!["spec.minReplicaCount", "spec.triggers[0].metricType"]
        );
        assert_eq!(m[0].2, "scale-to-zero-requirements-not-met");
        assert_eq!(
            m[1].1,
            "unknown metric type: , allowed values are 'Utilization' or 'AverageValue'"
        );
        let m = messages(
            "  scaleTargetRef: {name: t, kind: Rollout, apiVersion: argoproj.io/v1alpha1}\n  triggers:\n  - {type: memory, metricType: AverageValue, metadata: {value: 1Gi, containerName: app}}",
        );
        assert_eq!(m, vec![]);
        let m = messages(
            "  scaleTargetRef: {name: t}\n  minReplicaCount: 1\n  triggers:\n  - {type: cpu, metricType: Utilization, metadata: {value: '50.5'}}",
        );
        assert_eq!(m[0].0, "spec.triggers[0].metadata.value");
    }

    #[test]
    fn fallback_and_modifiers() {
        let m = messages(
            "  scaleTargetRef: {name: t}\n  minReplicaCount: 1\n  fallback: {failureThreshold: -1, replicas: 2}\n  triggers:\n  - {type: cpu, metricType: Utilization, metadata: {value: '50'}}",
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m.iter().all(|p| p.2 == "incorrect-fallback"));
        let m = messages(&format!(
            "  scaleTargetRef: {{name: t}}\n  fallback: {{failureThreshold: 1, replicas: 2, behavior: scalingModifiers}}\n  triggers: [{CRON}]"
        ));
        assert_eq!(m[0].2, "scaling-modifiers-fallback");
        let m = messages(&format!(
            "  scaleTargetRef: {{name: t}}\n  advanced: {{scalingModifiers: {{formula: 'a + b', target: '-1', metricType: Utilization}}}}\n  triggers:\n  - {{type: cron, name: a, metadata: {{timezone: Etc/UTC, start: '0 * * * *', end: '30 * * * *', desiredReplicas: '2'}}}}\n  - {CRON}"
        ));
        let msgs: Vec<&str> = m.iter().map(|p| p.1.as_str()).collect();
        assert_eq!(
            msgs,
            vec![
                "error validating formula in ScalingModifiers: unknown name b",
                "target for scalingModifiers is smaller or equal to 0",
                "error trigger type is Utilization, but it needs to be AverageValue or Value for external metrics"
            ]
        );
        let m = messages(
            "  scaleTargetRef: {name: t}\n  advanced: {scalingModifiers: {formula: 'a ?? 3', target: '2'}}\n  triggers:\n  - {type: cron, name: a, metadata: {timezone: Etc/UTC, start: '0 * * * *', end: '30 * * * *', desiredReplicas: '2'}}",
        );
        assert_eq!(m, vec![]);
    }

    #[test]
    fn name_lengths() {
        let long = "x".repeat(60);
        let so: ScaledObject = serde_yaml::from_str(&format!(
            "metadata: {{name: {long}}}\nspec:\n  scaleTargetRef: {{name: t}}\n  triggers: [{CRON}]"
        ))
        .expect("parses");
        let p = validate_scaled_object(&so);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].reason, "hpa-name-too-long");
    }

    #[test]
    fn trigger_authentication_rules() {
        let v = |yaml: &str| -> Vec<String> {
            let v: Value = serde_yaml::from_str(yaml).expect("parses");
            validate_trigger_authentication(&v)
                .into_iter()
                .map(|p| p.field)
                .collect()
        };
        assert_eq!(
            v(
                "kind: TriggerAuthentication\nspec: {podIdentity: {provider: azure-workload, identityId: '', identityAuthorityHost: h}}"
            ),
            vec!["spec.podIdentity.identityId", "spec.podIdentity.identityTenantId"]
        );
        assert_eq!(
            v(
                "kind: TriggerAuthentication\nspec: {podIdentity: {provider: aws, roleArn: r, identityOwner: workload}}"
            ),
            vec!["spec.podIdentity.roleArn"]
        );
        assert_eq!(
            v("kind: TriggerAuthentication\nspec: {podIdentity: {provider: aws, externalID: e}}"),
            vec!["spec.podIdentity.externalID"]
        );
        assert_eq!(
            v("kind: TriggerAuthentication\nspec: {oauth2: {type: password, tokenUrl: /rel}}"),
            vec!["spec.oauth2.type", "spec.oauth2.clientId", "spec.oauth2.tokenUrl"]
        );
        // The KEDA quirk: other providers skip the oauth2 checks.
        assert!(
            v("kind: TriggerAuthentication\nspec: {podIdentity: {provider: gcp}, oauth2: {type: x}}")
                .is_empty()
        );
        assert_eq!(
            v("kind: TriggerAuthentication\nspec: {filePath: a.json}"),
            vec!["spec.filePath"]
        );
        assert!(v("kind: ClusterTriggerAuthentication\nspec: {filePath: a/b.json}").is_empty());
    }
}

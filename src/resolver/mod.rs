//! Trigger authentication and environment resolution (spec §11): fills a trigger's
//! `auth_params`, `resolved_env`, `pod_identity` and `workload_role_arn` from its
//! (Cluster)TriggerAuthentication, Secrets, ConfigMaps and the scale target's pod template.
//!
//! The core, [`resolve_trigger`], is pure: it reads objects through [`AuthSources`]. Two
//! sources implement it: [`files::LocalResolver`] (`--local` documents) and
//! [`kube::KubeResolver`] (watch caches). Both are [`AuthResolver`]s for the registry.
//!
//! Where ebb differs from KEDA: a missing TriggerAuthentication, Secret, ConfigMap, key,
//! container or TriggerAuthentication `env` variable is an error naming the object and key,
//! not an empty value. The scale target is read only when something needs it (a `*FromEnv`
//! metadata key, a TriggerAuthentication `env` entry, or `identityOwner: workload`), so a
//! trigger that uses none of them works without its Deployment being visible.

pub mod files;
pub mod kube;

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret, ServiceAccount};

use crate::{
    crd::{
        ScaledObject,
        trigger_authentication::{AuthPodIdentity, TriggerAuthenticationSpec},
    },
    scalers::{ScalerConfig, ScalerError, registry::AuthResolver},
};

/// Annotation on a ServiceAccount naming the AWS role its pods assume (EKS IRSA).
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// Why a (Cluster)TriggerAuthentication a source holds cannot be used as one.
#[derive(Clone, Debug, thiserror::Error)]
pub enum MalformedAuth {
    /// The watch could not decode the object; kube's `DeserializeGuard` keeps only the message.
    #[error("{0}")]
    Watch(String),
    /// A `--local` document did not decode.
    #[error(transparent)]
    Document(Arc<serde_json::Error>),
}

/// A (Cluster)TriggerAuthentication as a source holds it: its spec, or why it is malformed.
pub type AuthEntry = Result<TriggerAuthenticationSpec, MalformedAuth>;

/// Lookups the resolver needs; implemented over `--local` documents and over watch caches.
pub trait AuthSources {
    /// A TriggerAuthentication's spec; `Some(Err(_))` when the object is malformed.
    fn trigger_authentication(&self, namespace: &str, name: &str) -> Option<AuthEntry>;
    /// A ClusterTriggerAuthentication's spec; `Some(Err(_))` when malformed.
    fn cluster_trigger_authentication(&self, name: &str) -> Option<AuthEntry>;
    /// A Secret, with `stringData` already merged into `data`.
    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>>;
    /// A ConfigMap.
    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>>;
    /// The pod template spec of a `Deployment` or `StatefulSet` (apps/v1).
    fn pod_spec(&self, kind: &str, namespace: &str, name: &str) -> Option<PodSpec>;
    /// A ServiceAccount.
    fn service_account(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccount>>;
}

/// What a trigger's authentication resolved to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    /// Parameters from the (Cluster)TriggerAuthentication.
    pub auth_params: BTreeMap<String, String>,
    /// Env of the scale target's container (`envSourceContainerName` or the first).
    pub resolved_env: BTreeMap<String, String>,
    /// `podIdentity`, when a provider other than `none` is set.
    pub pod_identity: Option<AuthPodIdentity>,
    /// Role from the workload's ServiceAccount with `identityOwner: workload`.
    pub workload_role_arn: Option<String>,
}

impl Resolved {
    /// Copies the result into a scaler config.
    pub fn apply_to(self, config: &mut ScalerConfig) {
        config.auth_params = self.auth_params;
        config.resolved_env = self.resolved_env;
        config.pod_identity = self.pod_identity;
        config.workload_role_arn = self.workload_role_arn;
    }
}

/// Namespace where ClusterTriggerAuthentication Secrets and ConfigMaps live: `flag`
/// (`--cluster-object-namespace`, KEDA's `KEDA_CLUSTER_OBJECT_NAMESPACE`), else the namespace
/// ebb runs in (service-account namespace file), else `ebb`.
pub fn cluster_object_namespace(flag: Option<&str>) -> String {
    if let Some(ns) = flag.map(str::trim).filter(|ns| !ns.is_empty()) {
        return ns.to_string();
    }
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ebb".to_string())
}

fn config_err(msg: String) -> ScalerError {
    ScalerError::Config(msg)
}

/// The scale target, read at most once per resolution and only when needed.
struct Target<'a> {
    kind: String,
    /// An apps/v1 Deployment or StatefulSet, whose pod template ebb reads.
    readable: bool,
    namespace: &'a str,
    name: &'a str,
    env_source_container: Option<&'a str>,
    /// Outer `None`: not read yet.
    pod_spec: Option<Option<PodSpec>>,
    envs: BTreeMap<String, (String, BTreeMap<String, String>)>,
}

impl<'a> Target<'a> {
    fn new(so: &'a ScaledObject, namespace: &'a str) -> Self {
        let r = &so.spec.scale_target_ref;
        let kind = r.kind_or_default();
        let group = r
            .api_version_or_default()
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("");
        // Only apps/v1 workloads (and a ScaledJob's jobTargetRef, see [`JobTemplate`]) have a
        // pod template ebb reads; anything else gets an empty env.
        let readable = (group == "apps" && matches!(kind, "Deployment" | "StatefulSet"))
            || (group == "keda.sh" && kind == "ScaledJob");
        let kind = if readable || group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        Self {
            kind,
            readable,
            namespace,
            name: &r.name,
            env_source_container: r.env_source_container_name.as_deref().filter(|c| !c.is_empty()),
            pod_spec: None,
            envs: BTreeMap::new(),
        }
    }

    fn readable(&self) -> bool {
        self.readable
    }

    fn label(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// The pod spec; `Ok(None)` for kinds without a readable pod template.
    fn pod_spec(&mut self, sources: &dyn AuthSources, why: &str) -> Result<Option<&PodSpec>, ScalerError> {
        if !self.readable() {
            return Ok(None);
        }
        if self.pod_spec.is_none() {
            self.pod_spec = Some(sources.pod_spec(&self.kind, self.namespace, self.name));
        }
        match &self.pod_spec {
            Some(Some(spec)) => Ok(Some(spec)),
            _ => Err(config_err(format!(
                "{} not found (scale target, needed for {why})",
                self.label()
            ))),
        }
    }

    /// The env of `container` (or the default container), resolved and cached, with the name
    /// of the container it came from.
    fn env(
        &mut self,
        sources: &dyn AuthSources,
        container: Option<&str>,
        why: &str,
    ) -> Result<(&str, &BTreeMap<String, String>), ScalerError> {
        let wanted = container.or(self.env_source_container).map(str::to_string);
        let cache_key = wanted.clone().unwrap_or_default();
        if !self.envs.contains_key(&cache_key) {
            let label = self.label();
            let namespace = self.namespace;
            let entry = match self.pod_spec(sources, why)? {
                None => (String::new(), BTreeMap::new()),
                Some(spec) => {
                    let c = pick_container(spec, wanted.as_deref(), &label)?;
                    (c.name.clone(), container_env(c, namespace, sources, &label)?)
                }
            };
            self.envs.insert(cache_key.clone(), entry);
        }
        self.envs
            .get(&cache_key)
            .map(|(name, env)| (name.as_str(), env))
            .ok_or_else(|| config_err("env cache lost".into()))
    }
}

fn pick_container<'s>(
    spec: &'s PodSpec,
    name: Option<&str>,
    label: &str,
) -> Result<&'s Container, ScalerError> {
    match name {
        Some(n) => spec
            .containers
            .iter()
            .find(|c| c.name == n)
            .ok_or_else(|| config_err(format!("container {n:?} not found in {label}"))),
        None => spec
            .containers
            .first()
            .ok_or_else(|| config_err(format!("{label} has no containers"))),
    }
}

fn utf8(bytes: &[u8], what: impl FnOnce() -> String) -> Result<String, ScalerError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| config_err(format!("{} is not valid UTF-8", what())))
}

/// Resolves a container's environment as the kubelet would: `envFrom` first (later sources
/// win, with `prefix`), then `env` in order, expanding `$(VAR)` from what came before.
/// `fieldRef`/`resourceFieldRef` are skipped: they only have values inside a running pod.
fn container_env(
    c: &Container,
    namespace: &str,
    sources: &dyn AuthSources,
    target: &str,
) -> Result<BTreeMap<String, String>, ScalerError> {
    let mut env = BTreeMap::new();
    let ctx = |what: &str| format!("{what} of container {:?} in {target}", c.name);
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(r) = &from.config_map_ref {
            match sources.config_map(namespace, &r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        env.insert(format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(config_err(format!(
                        "ConfigMap {namespace}/{} not found ({})",
                        r.name,
                        ctx("envFrom")
                    )));
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secret(namespace, &r.name) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        // A binary value cannot be an env var the scaler wants; the kubelet
                        // would pass the bytes, we drop the key rather than corrupt it.
                        if let Ok(v) = String::from_utf8(v.0.clone()) {
                            env.insert(format!("{prefix}{k}"), v);
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(config_err(format!(
                        "Secret {namespace}/{} not found ({})",
                        r.name,
                        ctx("envFrom")
                    )));
                }
            }
        }
    }
    for var in c.env.iter().flatten() {
        let here = || ctx(&format!("env {}", var.name));
        let value = if let Some(from) = &var.value_from {
            if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match sources.secret(namespace, &r.name) {
                    None if optional => continue,
                    None => {
                        return Err(config_err(format!(
                            "Secret {namespace}/{} not found ({})",
                            r.name,
                            here()
                        )));
                    }
                    Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => utf8(&v.0, || {
                            format!("key {:?} in Secret {namespace}/{} ({})", r.key, r.name, here())
                        })?,
                        None if optional => continue,
                        None => {
                            return Err(config_err(format!(
                                "key {:?} not found in Secret {namespace}/{} ({})",
                                r.key,
                                r.name,
                                here()
                            )));
                        }
                    },
                }
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match sources.config_map(namespace, &r.name) {
                    None if optional => continue,
                    None => {
                        return Err(config_err(format!(
                            "ConfigMap {namespace}/{} not found ({})",
                            r.name,
                            here()
                        )));
                    }
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(config_err(format!(
                                "key {:?} not found in ConfigMap {namespace}/{} ({})",
                                r.key,
                                r.name,
                                here()
                            )));
                        }
                    },
                }
            } else {
                continue;
            }
        } else {
            expand(var.value.as_deref().unwrap_or(""), &env)
        };
        env.insert(var.name.clone(), value);
    }
    Ok(env)
}

/// Kubernetes' `$(VAR)` expansion: `$$` is a literal `$`, `$(NAME)` is replaced when NAME is
/// defined and kept verbatim otherwise, an unterminated `$(` is kept verbatim.
pub fn expand(input: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The referenced authentication object, with where its Secrets live.
struct AuthObject {
    label: String,
    spec: TriggerAuthenticationSpec,
    secret_namespace: String,
    cluster: bool,
}

fn load_auth(
    so: &ScaledObject,
    index: usize,
    namespace: &str,
    sources: &dyn AuthSources,
    cluster_object_namespace: &str,
) -> Result<Option<AuthObject>, ScalerError> {
    let Some(r) = so
        .spec
        .triggers
        .get(index)
        .and_then(|t| t.authentication_ref.as_ref())
    else {
        return Ok(None);
    };
    let kind = r
        .kind
        .as_deref()
        .filter(|k| !k.is_empty())
        .unwrap_or("TriggerAuthentication");
    let (label, found, secret_namespace, cluster) = match kind {
        "TriggerAuthentication" => (
            format!("TriggerAuthentication {namespace}/{}", r.name),
            sources.trigger_authentication(namespace, &r.name),
            namespace.to_string(),
            false,
        ),
        "ClusterTriggerAuthentication" => (
            format!("ClusterTriggerAuthentication {}", r.name),
            sources.cluster_trigger_authentication(&r.name),
            cluster_object_namespace.to_string(),
            true,
        ),
        other => {
            return Err(config_err(format!(
                "authenticationRef.kind {other:?} is not TriggerAuthentication or ClusterTriggerAuthentication"
            )));
        }
    };
    match found {
        None => Err(config_err(format!("{label} not found"))),
        Some(Err(reason)) => Err(config_err(format!("{label} is malformed: {reason}"))),
        Some(Ok(spec)) => Ok(Some(AuthObject {
            label,
            spec,
            secret_namespace,
            cluster,
        })),
    }
}

fn present(v: &Option<serde_json::Value>) -> bool {
    match v {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// Resolves trigger `index` of `so` in KEDA's order: env → filePath → configMapTargetRef →
/// secretTargetRef → external stores; later sources overwrite earlier ones for a parameter.
pub fn resolve_trigger(
    so: &ScaledObject,
    index: usize,
    sources: &dyn AuthSources,
    cluster_object_namespace: &str,
) -> Result<Resolved, ScalerError> {
    let trigger = so
        .spec
        .triggers
        .get(index)
        .ok_or_else(|| config_err(format!("no trigger at index {index}")))?;
    let namespace = so
        .metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    let mut target = Target::new(so, namespace);
    let mut out = Resolved::default();

    if trigger.metadata.keys().any(|k| k.ends_with("FromEnv")) {
        out.resolved_env = target.env(sources, None, "*FromEnv metadata")?.1.clone();
    }

    let Some(auth) = load_auth(so, index, namespace, sources, cluster_object_namespace)? else {
        return Ok(out);
    };
    let spec = &auth.spec;
    let ctx = |parameter: &str| format!("{}, parameter {parameter}", auth.label);

    for e in &spec.env {
        let why = format!("env of {}", auth.label);
        if !target.readable() {
            return Err(config_err(format!(
                "env {:?} cannot be read: scale target {} has no pod template ebb can read ({})",
                e.name,
                target.label(),
                ctx(&e.parameter)
            )));
        }
        let container = e.container_name.as_deref().filter(|c| !c.is_empty());
        let label = target.label();
        let (c, env) = target.env(sources, container, &why)?;
        let value = env.get(&e.name).ok_or_else(|| {
            config_err(format!(
                "env {:?} not found in container {c:?} of {label} ({})",
                e.name,
                ctx(&e.parameter)
            ))
        })?;
        out.auth_params.insert(e.parameter.clone(), value.clone());
    }

    if let Some(path) = spec.file_path.as_deref().filter(|p| !p.is_empty()) {
        return Err(config_err(if auth.cluster {
            format!(
                "filePath is not supported yet ({}, filePath {path:?})",
                auth.label
            )
        } else {
            format!(
                "filePath is only allowed in a ClusterTriggerAuthentication ({})",
                auth.label
            )
        }));
    }

    let ns = &auth.secret_namespace;
    for r in &spec.config_map_target_ref {
        let cm = sources.config_map(ns, &r.name).ok_or_else(|| {
            config_err(format!(
                "ConfigMap {ns}/{} not found ({})",
                r.name,
                ctx(&r.parameter)
            ))
        })?;
        let value = cm.data.as_ref().and_then(|d| d.get(&r.key)).ok_or_else(|| {
            config_err(format!(
                "key {:?} not found in ConfigMap {ns}/{} ({})",
                r.key,
                r.name,
                ctx(&r.parameter)
            ))
        })?;
        out.auth_params.insert(r.parameter.clone(), value.clone());
    }

    for r in &spec.secret_target_ref {
        let secret = sources.secret(ns, &r.name).ok_or_else(|| {
            config_err(format!(
                "Secret {ns}/{} not found ({})",
                r.name,
                ctx(&r.parameter)
            ))
        })?;
        let bytes = secret.data.as_ref().and_then(|d| d.get(&r.key)).ok_or_else(|| {
            config_err(format!(
                "key {:?} not found in Secret {ns}/{} ({})",
                r.key,
                r.name,
                ctx(&r.parameter)
            ))
        })?;
        let value = utf8(&bytes.0, || {
            format!(
                "key {:?} in Secret {ns}/{} ({})",
                r.key,
                r.name,
                ctx(&r.parameter)
            )
        })?;
        out.auth_params.insert(r.parameter.clone(), value);
    }

    let stores = [
        ("hashiCorpVault", &spec.hashi_corp_vault),
        ("azureKeyVault", &spec.azure_key_vault),
        ("gcpSecretManager", &spec.gcp_secret_manager),
        ("awsSecretManager", &spec.aws_secret_manager),
        ("boundServiceAccountToken", &spec.bound_service_account_token),
        ("oauth2", &spec.oauth2),
    ];
    for (store, value) in stores {
        if present(value) {
            return Err(config_err(format!(
                "{store} is not supported yet ({})",
                auth.label
            )));
        }
    }

    if let Some(pi) = &spec.pod_identity {
        resolve_pod_identity(pi, &auth.label, &mut target, sources, &mut out)?;
    }
    Ok(out)
}

fn resolve_pod_identity(
    pi: &AuthPodIdentity,
    label: &str,
    target: &mut Target<'_>,
    sources: &dyn AuthSources,
    out: &mut Resolved,
) -> Result<(), ScalerError> {
    let role_arn = pi.role_arn.as_deref().filter(|r| !r.is_empty());
    let owner = pi.identity_owner.as_deref().filter(|o| !o.is_empty());
    match pi.provider.as_str() {
        "" | "none" => return Ok(()),
        "aws" => {
            if owner == Some("workload") {
                if role_arn.is_some() {
                    return Err(config_err(format!(
                        "podIdentity.roleArn cannot be used with identityOwner: workload ({label})"
                    )));
                }
                out.workload_role_arn = Some(workload_role(target, sources, label)?);
            }
        }
        // Deprecated; the role annotation is optional there, so any gap just means "no role".
        "aws-eks" => out.workload_role_arn = workload_role(target, sources, label).ok(),
        p @ ("azure-workload" | "gcp") => {
            return Err(config_err(format!(
                "podIdentity provider {p} is not supported yet ({label})"
            )));
        }
        other => {
            return Err(config_err(format!(
                "unknown podIdentity provider {other:?} ({label})"
            )));
        }
    }
    out.pod_identity = Some(pi.clone());
    Ok(())
}

fn workload_role(
    target: &mut Target<'_>,
    sources: &dyn AuthSources,
    label: &str,
) -> Result<String, ScalerError> {
    let why = format!("identityOwner: workload of {label}");
    let target_label = target.label();
    let namespace = target.namespace;
    let Some(spec) = target.pod_spec(sources, &why)? else {
        return Err(config_err(format!(
            "identityOwner: workload needs a Deployment or StatefulSet scale target, not {target_label} ({label})"
        )));
    };
    let sa = spec
        .service_account_name
        .as_deref()
        .or(spec.service_account.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let account = sources.service_account(namespace, sa).ok_or_else(|| {
        config_err(format!(
            "ServiceAccount {namespace}/{sa} not found (service account of {target_label}, {why})"
        ))
    })?;
    account
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROLE_ARN_ANNOTATION))
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            config_err(format!(
                "annotation {ROLE_ARN_ANNOTATION} not found on ServiceAccount {namespace}/{sa} ({why})"
            ))
        })
}

/// An [`AuthResolver`] over any [`AuthSources`], with a fixed cluster-object namespace.
pub(crate) fn resolve_into(
    sources: &dyn AuthSources,
    cluster_object_namespace: &str,
    so: &ScaledObject,
    index: usize,
    config: &mut ScalerConfig,
) -> Result<(), ScalerError> {
    resolve_trigger(so, index, sources, cluster_object_namespace)?.apply_to(config);
    Ok(())
}

/// Sources whose scale target is a ScaledJob: its pod template is the `jobTargetRef`'s, every
/// other lookup goes to `inner`.
pub struct JobTemplate<'a> {
    /// The lookups for everything else.
    pub inner: &'a dyn AuthSources,
    /// `jobTargetRef.template.spec`.
    pub template: &'a PodSpec,
}

impl AuthSources for JobTemplate<'_> {
    fn trigger_authentication(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Result<TriggerAuthenticationSpec, MalformedAuth>> {
        self.inner.trigger_authentication(namespace, name)
    }

    fn cluster_trigger_authentication(
        &self,
        name: &str,
    ) -> Option<Result<TriggerAuthenticationSpec, MalformedAuth>> {
        self.inner.cluster_trigger_authentication(name)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.inner.secret(namespace, name)
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.inner.config_map(namespace, name)
    }

    fn pod_spec(&self, kind: &str, namespace: &str, name: &str) -> Option<PodSpec> {
        if kind == "ScaledJob" {
            Some(self.template.clone())
        } else {
            self.inner.pod_spec(kind, namespace, name)
        }
    }

    fn service_account(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccount>> {
        self.inner.service_account(namespace, name)
    }
}

/// [`resolve_into`] for a ScaledJob's trigger (see [`AuthResolver::resolve_for_job`]).
pub(crate) fn resolve_job_into(
    sources: &dyn AuthSources,
    cluster_object_namespace: &str,
    so: &ScaledObject,
    index: usize,
    template: &PodSpec,
    config: &mut ScalerConfig,
) -> Result<(), ScalerError> {
    let sources = JobTemplate {
        inner: sources,
        template,
    };
    resolve_into(&sources, cluster_object_namespace, so, index, config)
}

/// An [`AuthResolver`] for one ScaledJob: every trigger is resolved with `template` (its
/// `jobTargetRef` pod spec) as the scale target's pod template.
pub struct ForJob<'a> {
    /// The resolver of everything else.
    pub inner: &'a dyn AuthResolver,
    /// `jobTargetRef.template.spec`.
    pub template: &'a PodSpec,
}

impl AuthResolver for ForJob<'_> {
    fn resolve(&self, so: &ScaledObject, index: usize, config: &mut ScalerConfig) -> Result<(), ScalerError> {
        self.inner.resolve_for_job(so, index, self.template, config)
    }
}

/// A resolver over a fixed set of sources; handy in tests and tools.
pub struct StaticResolver<S> {
    /// The lookups.
    pub sources: S,
    /// Namespace of ClusterTriggerAuthentication Secrets and ConfigMaps.
    pub cluster_object_namespace: String,
}

impl<S: AuthSources + Send + Sync> AuthResolver for StaticResolver<S> {
    fn resolve(&self, so: &ScaledObject, index: usize, config: &mut ScalerConfig) -> Result<(), ScalerError> {
        resolve_into(&self.sources, &self.cluster_object_namespace, so, index, config)
    }

    fn resolve_for_job(
        &self,
        so: &ScaledObject,
        index: usize,
        template: &PodSpec,
        config: &mut ScalerConfig,
    ) -> Result<(), ScalerError> {
        resolve_job_into(
            &self.sources,
            &self.cluster_object_namespace,
            so,
            index,
            template,
            config,
        )
    }
}

//! Live scalers per ScaledObject trigger, keyed so a metric read finds its trigger in O(1).
//!
//! ```text
//! source (kube watch | --local DIR) --apply/delete--> Registry --lookup--> metric read
//!                                                        \--invalidate--> MetricCache
//! ```
//! The map lock is held only to clone an `Arc`, never across a scaler call.

use crate::locks::RwLockExt;
use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tracing::{debug, info, warn};

use super::{MetricSpec, ScalerConfig, ScalerContext, ScalerError, SharedScaler, build_scaler};
use crate::crd::ScaledObject;

/// Identifies a ScaledObject: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One trigger of a registered ScaledObject.
#[derive(Debug)]
pub struct TriggerEntry {
    /// Position in `spec.triggers`.
    pub index: usize,
    /// Trigger type.
    pub trigger_type: String,
    /// Trigger name, empty when unnamed.
    pub trigger_name: String,
    /// The scaler, or why it could not be built.
    pub scaler: Result<SharedScaler, ScalerError>,
    /// External metric names of this trigger (original case).
    pub metric_names: Vec<String>,
    /// Serve reads from the value of the last poll.
    pub use_cached_metrics: bool,
    /// Names (never values) of the parameters its TriggerAuthentication resolved, for
    /// `ebb explain`.
    pub auth_fields: Vec<String>,
}

/// The few spec fields `ebb explain` shows for an object the registry keeps no copy of.
#[derive(Debug, Clone, Default)]
pub struct ObjectSummary {
    /// `minReplicaCount` (default 0).
    pub min_replica_count: i32,
    /// `maxReplicaCount` (default 100).
    pub max_replica_count: i32,
    /// `idleReplicaCount`.
    pub idle_replica_count: Option<i32>,
    /// `cooldownPeriod` seconds (default 300).
    pub cooldown_period: i64,
    /// The `autoscaling.keda.sh/*` annotations.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The scalingModifiers formula.
    pub formula: Option<String>,
}

impl ObjectSummary {
    /// Reads them from the object.
    pub fn of(so: &ScaledObject) -> Self {
        let spec = &so.spec;
        ObjectSummary {
            min_replica_count: spec.min_replica_count.unwrap_or(0),
            max_replica_count: spec
                .max_replica_count
                .unwrap_or(crate::crd::scaled_object::DEFAULT_MAX_REPLICAS),
            idle_replica_count: spec.idle_replica_count,
            cooldown_period: i64::from(
                spec.cooldown_period
                    .unwrap_or(crate::crd::scaled_object::DEFAULT_COOLDOWN_PERIOD),
            ),
            annotations: so
                .metadata
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("autoscaling.keda.sh/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            formula: spec
                .advanced
                .as_ref()
                .and_then(|a| a.scaling_modifiers.as_ref())
                .and_then(|m| m.formula.clone()),
        }
    }
}

/// A registered ScaledObject with its built scalers.
#[derive(Debug)]
pub struct ObjectEntry {
    /// Namespace and name.
    pub key: ObjectKey,
    /// Changes whenever the object is rebuilt; part of every cache key.
    pub epoch: u64,
    /// `pollingInterval`.
    pub polling_interval: Duration,
    /// Triggers in order.
    pub triggers: Vec<TriggerEntry>,
    /// Hash of the spec and annotations the scalers were built from, to skip no-op rebuilds.
    pub spec_hash: u64,
    /// The object as built (managed fields and status dropped), kept only when a trigger
    /// depends on authentication or environment sources that can change under it, or when a
    /// read needs the spec (fallback, scalingModifiers); 10,000 plain objects should not cost
    /// a second copy.
    pub object: Option<Arc<ScaledObject>>,
    /// Rebuild when authentication sources change (see [`Registry::rebuild_all`]).
    pub depends_on_auth: bool,
    /// Spec fields for `ebb explain`.
    pub summary: ObjectSummary,
}

impl ObjectEntry {
    /// The spec, when a read needs it: fallback or scalingModifiers are configured.
    pub fn read_policy(&self) -> Option<&ScaledObject> {
        self.object
            .as_deref()
            .filter(|so| so.spec.fallback.is_some() || so.spec.uses_scaling_modifiers())
    }
}

/// What a metric read resolved to.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The ScaledObject.
    pub object: Arc<ObjectEntry>,
    /// Index into `object.triggers`.
    pub trigger: usize,
    /// Index into that trigger's `metric_names`.
    pub metric: usize,
    /// Metric name in its original case.
    pub metric_name: String,
}

impl Resolved {
    /// The trigger this read resolved to.
    pub fn trigger(&self) -> &TriggerEntry {
        &self.object.triggers[self.trigger]
    }
}

/// Why a metric read could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No ScaledObject of that name in that namespace.
    #[error("ScaledObject {0} not found")]
    ObjectNotFound(ObjectKey),
    /// The ScaledObject has no trigger producing that metric.
    #[error("no metric {metric} in ScaledObject {object}{hint}")]
    MetricNotFound {
        /// The object.
        object: ObjectKey,
        /// The metric as asked.
        metric: String,
        /// Extra text naming broken triggers, which may be why the name is unknown.
        hint: String,
    },
}

/// Fills a trigger's authentication parameters, environment and pod identity from its
/// (Cluster)TriggerAuthentication and scale target, as KEDA's resolver does.
///
/// Synchronous on purpose: implementations read watch caches (or `--local` files), so the
/// registry never waits on the network while building scalers.
pub trait AuthResolver: Send + Sync {
    /// Completes `config` for trigger `index` of `so`.
    fn resolve(&self, so: &ScaledObject, index: usize, config: &mut ScalerConfig) -> Result<(), ScalerError>;

    /// [`AuthResolver::resolve`] for a ScaledJob's trigger: `so` is the ScaledJob as a
    /// ScaledObject (`scaling::scaled_job::as_scaled_object`) and `template` the pod spec of its
    /// `jobTargetRef`, where `*FromEnv` and TriggerAuthentication `env` entries are read.
    fn resolve_for_job(
        &self,
        so: &ScaledObject,
        index: usize,
        _template: &k8s_openapi::api::core::v1::PodSpec,
        config: &mut ScalerConfig,
    ) -> Result<(), ScalerError> {
        self.resolve(so, index, config)
    }
}

/// The resolver used when nothing can be resolved: a trigger with an `authenticationRef` fails
/// with a message naming it; other triggers are untouched.
#[derive(Debug, Default)]
pub struct NoAuthResolver;

impl AuthResolver for NoAuthResolver {
    fn resolve(
        &self,
        so: &ScaledObject,
        index: usize,
        _config: &mut ScalerConfig,
    ) -> Result<(), ScalerError> {
        match so
            .spec
            .triggers
            .get(index)
            .and_then(|t| t.authentication_ref.as_ref())
        {
            Some(r) => Err(ScalerError::Config(format!(
                "{} {} cannot be resolved: no TriggerAuthentication source is configured",
                r.kind.as_deref().unwrap_or("TriggerAuthentication"),
                r.name
            ))),
            None => Ok(()),
        }
    }
}

/// Settings shared by every scaler built by the registry.
#[derive(Clone)]
pub struct RegistryConfig {
    /// Default timeout for scaler HTTP calls.
    pub http_timeout: Duration,
    /// Shared clients for the scalers.
    pub context: ScalerContext,
    /// Authentication resolution.
    pub resolver: Arc<dyn AuthResolver>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("http_timeout", &self.http_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            http_timeout: Duration::from_millis(3000),
            context: ScalerContext::default(),
            resolver: Arc::new(NoAuthResolver),
        }
    }
}

/// Called with the build epoch of every ScaledObject build that was replaced or removed.
pub type InvalidateFn = Arc<dyn Fn(u64) + Send + Sync>;

/// Called with the key of every ScaledObject removed.
pub type RemoveFn = Arc<dyn Fn(&ObjectKey) + Send + Sync>;

/// Called with every ScaledObject applied, status included, before it is trimmed.
pub type ApplyFn = Arc<dyn Fn(&ObjectKey, &ScaledObject) + Send + Sync>;

/// All live scalers, shared by the metrics server (and later the operator).
pub struct Registry {
    objects: RwLock<HashMap<ObjectKey, Arc<ObjectEntry>>>,
    next_epoch: AtomicU64,
    config: RwLock<RegistryConfig>,
    on_invalidate: RwLock<Vec<InvalidateFn>>,
    on_remove: RwLock<Vec<RemoveFn>>,
    on_apply: RwLock<Vec<ApplyFn>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("objects", &self.len()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(config: RegistryConfig) -> Self {
        Self {
            objects: RwLock::new(HashMap::new()),
            next_epoch: AtomicU64::new(1),
            config: RwLock::new(config),
            on_invalidate: RwLock::new(Vec::new()),
            on_remove: RwLock::new(Vec::new()),
            on_apply: RwLock::new(Vec::new()),
        }
    }

    /// Replaces the authentication resolver and scaler context (they may need the registry to
    /// exist first, e.g. to rebuild it when a Secret changes) and rebuilds what depends on them.
    pub fn configure(&self, resolver: Arc<dyn AuthResolver>, context: ScalerContext) {
        {
            let mut c = self.config.write_or_recover();
            c.resolver = resolver;
            c.context = context;
        }
        self.rebuild_all();
    }

    /// The resolver, scaler context and timeout scalers are built with (the ScaledJob
    /// controller builds its own registry from them).
    pub fn config(&self) -> RegistryConfig {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Registers a hook called when an object changes or is removed (the metric cache uses it).
    pub fn on_invalidate(&self, f: InvalidateFn) {
        {
            let mut hooks = self.on_invalidate.write_or_recover();
            hooks.push(f);
        }
    }

    /// Registers a hook called when an object is removed (fallback counters use it).
    pub fn on_remove(&self, f: RemoveFn) {
        {
            let mut hooks = self.on_remove.write_or_recover();
            hooks.push(f);
        }
    }

    /// Registers a hook called with every object applied, status included (fallback counters
    /// resume from `status.health` with it).
    pub fn on_apply(&self, f: ApplyFn) {
        {
            let mut hooks = self.on_apply.write_or_recover();
            hooks.push(f);
        }
    }

    /// Number of registered ScaledObjects.
    pub fn len(&self) -> usize {
        self.objects.read_or_recover().len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every registered key.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.objects.read_or_recover().keys().cloned().collect()
    }

    /// The entry of one ScaledObject.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<ObjectEntry>> {
        self.objects.read_or_recover().get(key).cloned()
    }

    /// Adds or updates a ScaledObject; scalers are rebuilt only when the spec changed.
    pub fn apply(&self, so: &ScaledObject) {
        let key = object_key(so);
        {
            let hooks = self.on_apply.read_or_recover();
            for h in hooks.iter() {
                h(&key, so);
            }
        }
        let hash = spec_hash(so);
        if let Some(existing) = self.get(&key)
            && existing.spec_hash == hash
        {
            return;
        }
        self.install(key, trimmed(so), hash);
    }

    /// Rebuilds every object's scalers (re-resolving authentication), e.g. after a Secret,
    /// TriggerAuthentication or scale target changed.
    pub fn rebuild_all(&self) {
        let objects: Vec<Arc<ObjectEntry>> = self.objects.read_or_recover().values().cloned().collect();
        for entry in objects.into_iter().filter(|e| e.depends_on_auth) {
            if let Some(so) = &entry.object {
                self.install(entry.key.clone(), so.clone(), entry.spec_hash);
            }
        }
    }

    fn install(&self, key: ObjectKey, so: Arc<ScaledObject>, hash: u64) {
        let entry = Arc::new(self.build(key.clone(), so, hash));
        for t in &entry.triggers {
            if let Err(e) = &t.scaler {
                warn!(scaledobject = %key, trigger = t.index, r#type = %t.trigger_type, error = %e, "trigger cannot be built");
            }
        }
        let replaced = self.objects.write_or_recover().insert(key.clone(), entry);
        if let Some(old) = &replaced {
            self.invalidate(old.epoch);
        }
        debug!(scaledobject = %key, replaced = replaced.is_some(), "scaledobject registered");
    }

    /// Removes a ScaledObject and everything cached for it.
    pub fn remove(&self, key: &ObjectKey) {
        let removed = self.objects.write_or_recover().remove(key);
        if let Some(old) = removed {
            self.invalidate(old.epoch);
            {
                let hooks = self.on_remove.read_or_recover();
                for h in hooks.iter() {
                    h(key);
                }
            }
            info!(scaledobject = %key, "scaledobject removed");
        }
    }

    /// Replaces the whole set (a watch restart or a full re-read of `--local`).
    pub fn replace_all(&self, objects: &[ScaledObject]) {
        let wanted: std::collections::HashSet<ObjectKey> = objects.iter().map(object_key).collect();
        for key in self.keys() {
            if !wanted.contains(&key) {
                self.remove(&key);
            }
        }
        for so in objects {
            self.apply(so);
        }
    }

    /// Finds the trigger serving `metric` (matched case-insensitively) of ScaledObject `key`.
    pub fn resolve(&self, key: &ObjectKey, metric: &str) -> Result<Resolved, LookupError> {
        let object = self
            .get(key)
            .ok_or_else(|| LookupError::ObjectNotFound(key.clone()))?;
        for (i, t) in object.triggers.iter().enumerate() {
            if let Some(m) = t.metric_names.iter().position(|n| n.eq_ignore_ascii_case(metric)) {
                let metric_name = t.metric_names[m].clone();
                return Ok(Resolved {
                    object,
                    trigger: i,
                    metric: m,
                    metric_name,
                });
            }
        }
        let broken: Vec<String> = object
            .triggers
            .iter()
            .filter_map(|t| {
                t.scaler
                    .as_ref()
                    .err()
                    .map(|e| format!("trigger {} ({}): {e}", t.index, t.trigger_type))
            })
            .collect();
        let hint = if broken.is_empty() {
            String::new()
        } else {
            format!("; broken triggers: {}", broken.join("; "))
        };
        Err(LookupError::MetricNotFound {
            object: key.clone(),
            metric: metric.to_string(),
            hint,
        })
    }

    fn invalidate(&self, epoch: u64) {
        {
            let hooks = self.on_invalidate.read_or_recover();
            for h in hooks.iter() {
                h(epoch);
            }
        }
    }

    fn build(&self, key: ObjectKey, so: Arc<ScaledObject>, spec_hash: u64) -> ObjectEntry {
        let settings = self.config.read_or_recover().clone();
        let spec = &so.spec;
        let depends_on_auth = needs_rebuilds(&so);
        let triggers = spec
            .triggers
            .iter()
            .enumerate()
            .map(|(index, trigger)| {
                let built = build_trigger_with_fields(
                    &so,
                    index,
                    settings.resolver.as_ref(),
                    &settings.context,
                    settings.http_timeout,
                );
                let (scaler, auth_fields) = match built {
                    Ok((s, fields)) => (Ok(s), fields),
                    Err(e) => (Err(e), Vec::new()),
                };
                let metric_names = match &scaler {
                    Ok(s) => s
                        .metric_specs()
                        .into_iter()
                        .filter_map(|m| match m {
                            MetricSpec::External { name, .. } => Some(name),
                            MetricSpec::Resource { .. } => None,
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                TriggerEntry {
                    index,
                    trigger_type: trigger.type_.clone(),
                    trigger_name: trigger.name.clone().unwrap_or_default(),
                    scaler,
                    metric_names,
                    use_cached_metrics: trigger.use_cached_metrics.unwrap_or(false),
                    auth_fields,
                }
            })
            .collect();
        ObjectEntry {
            key,
            epoch: self.next_epoch.fetch_add(1, Ordering::Relaxed),
            polling_interval: Duration::from_secs(spec.polling_interval_secs()),
            triggers,
            spec_hash,
            depends_on_auth,
            summary: ObjectSummary::of(&so),
            object: (depends_on_auth || spec.fallback.is_some() || spec.uses_scaling_modifiers())
                .then(|| so.clone()),
        }
    }
}

/// The `ScalerConfig` of trigger `index` before its TriggerAuthentication and environment are
/// resolved (the namespace defaults to `default`, as kubectl applies it).
pub fn trigger_config(so: &ScaledObject, index: usize, http_timeout: Duration) -> ScalerConfig {
    let key = object_key(so);
    let trigger = so.spec.triggers.get(index);
    ScalerConfig {
        namespace: key.namespace,
        scaled_object: key.name,
        trigger_index: index,
        trigger_type: trigger.map(|t| t.type_.clone()).unwrap_or_default(),
        trigger_name: trigger.and_then(|t| t.name.clone()).unwrap_or_default(),
        metadata: trigger.map(|t| t.metadata.clone()).unwrap_or_default(),
        auth_params: Default::default(),
        resolved_env: Default::default(),
        metric_type: trigger.and_then(|t| t.metric_type).unwrap_or_default(),
        metric_type_explicit: trigger.is_some_and(|t| t.metric_type.is_some()),
        as_metric_source: so.spec.uses_scaling_modifiers(),
        global_http_timeout: http_timeout,
        pod_identity: None,
        workload_role_arn: None,
    }
}

/// Builds trigger `index`'s scaler as the registry does for the operator and the metrics
/// server: resolve its authentication and environment, build the scaler, apply KEDA's
/// `useCachedMetrics` restriction. `ebb check` and `ebb render` call it too.
pub fn build_trigger(
    so: &ScaledObject,
    index: usize,
    resolver: &dyn AuthResolver,
    ctx: &ScalerContext,
    http_timeout: Duration,
) -> Result<SharedScaler, ScalerError> {
    build_trigger_with_fields(so, index, resolver, ctx, http_timeout).map(|(s, _)| s)
}

/// [`build_trigger`], also returning the names of the authentication parameters resolved.
pub fn build_trigger_with_fields(
    so: &ScaledObject,
    index: usize,
    resolver: &dyn AuthResolver,
    ctx: &ScalerContext,
    http_timeout: Duration,
) -> Result<(SharedScaler, Vec<String>), ScalerError> {
    let mut config = trigger_config(so, index, http_timeout);
    resolver.resolve(so, index, &mut config)?;
    let fields = config.auth_params.keys().cloned().collect();
    let scaler = build_scaler(&config, ctx)?;
    let trigger = so.spec.triggers.get(index);
    if let Some(t) = trigger
        && t.use_cached_metrics == Some(true)
        && matches!(t.type_.as_str(), "cron" | "cpu" | "memory")
    {
        return Err(ScalerError::Config(format!(
            "property \"useCachedMetrics\" is not supported for \"{}\" scaler",
            t.type_
        )));
    }
    Ok((scaler, fields))
}

/// The registry key of a ScaledObject (`default` namespace when unset, as kubectl applies it).
pub fn object_key(so: &ScaledObject) -> ObjectKey {
    ObjectKey::new(
        so.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        so.metadata.name.clone().unwrap_or_default(),
    )
}

fn spec_hash(so: &ScaledObject) -> u64 {
    let mut bytes = serde_json::to_vec(&so.spec).unwrap_or_default();
    bytes.extend(serde_json::to_vec(&so.metadata.annotations).unwrap_or_default());
    crate::hash::fnv1a(&bytes)
}

/// The parts of a ScaledObject the registry needs, without managed fields and status.
fn trimmed(so: &ScaledObject) -> Arc<ScaledObject> {
    let mut so = so.clone();
    so.metadata.managed_fields = None;
    so.status = None;
    Arc::new(so)
}

/// True when a trigger reads a (Cluster)TriggerAuthentication or the target's environment,
/// whose sources can change without the ScaledObject changing.
fn needs_rebuilds(so: &ScaledObject) -> bool {
    so.spec
        .triggers
        .iter()
        .any(|t| t.authentication_ref.is_some() || t.metadata.keys().any(|k| k.ends_with("FromEnv")))
}

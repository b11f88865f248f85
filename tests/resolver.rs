//! Trigger authentication and env resolution: the pure core over fixture objects (real API
//! server JSON under tests/fixtures/k8s), the `--local` resolver from YAML documents, and the
//! watch-cache resolver fed with watcher events.

use std::{collections::HashMap, sync::Arc};

use ebb::{
    crd::{
        ScaledObject,
        trigger_authentication::{
            ClusterTriggerAuthentication, ClusterTriggerAuthenticationSpec, TriggerAuthentication,
            TriggerAuthenticationSpec,
        },
    },
    resolver::{
        AuthEntry, AuthSources, MalformedAuth, Resolved, expand, files::LocalResolver, kube::KubeResolver,
        resolve_trigger,
    },
    scalers::{ScalerConfig, kubernetes_workload::PodIndex, registry::AuthResolver},
    selector,
};
use k8s_openapi::{
    List,
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{ConfigMap, Pod, PodSpec, Secret, ServiceAccount},
    },
};
use kube::{core::DeserializeGuard, runtime::watcher::Event};
use serde::de::DeserializeOwned;
use serde_json::json;

fn fixture<T: DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/k8s/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture parses")
}

type Key = (String, String);

/// Objects by namespace/name, as a watch cache or a directory would hold them.
#[derive(Default)]
struct Fake {
    tas: HashMap<Key, AuthEntry>,
    ctas: HashMap<String, AuthEntry>,
    secrets: HashMap<Key, Arc<Secret>>,
    config_maps: HashMap<Key, Arc<ConfigMap>>,
    deployments: HashMap<Key, PodSpec>,
    stateful_sets: HashMap<Key, PodSpec>,
    service_accounts: HashMap<Key, Arc<ServiceAccount>>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn ta_spec(v: serde_json::Value) -> TriggerAuthenticationSpec {
    serde_json::from_value(v).expect("TriggerAuthentication spec")
}

impl Fake {
    fn cluster() -> Self {
        let mut f = Fake::default();
        for name in [
            "secret-db-creds.json",
            "secret-env-source.json",
            "secret-keda-cluster-creds.json",
        ] {
            let s: Secret = fixture(name);
            f.secrets.insert(key_of(&s.metadata), Arc::new(s));
        }
        let cm: ConfigMap = fixture("configmap-settings.json");
        f.config_maps.insert(key_of(&cm.metadata), Arc::new(cm));
        let d: Deployment = fixture("deployment-web.json");
        let spec = d.spec.clone().and_then(|s| s.template.spec).expect("pod spec");
        f.deployments.insert(key_of(&d.metadata), spec);
        let s: StatefulSet = fixture("statefulset-db.json");
        let spec = s.spec.clone().and_then(|s| s.template.spec).expect("pod spec");
        f.stateful_sets.insert(key_of(&s.metadata), spec);
        for name in ["serviceaccount-web-sa.json", "serviceaccount-default.json"] {
            let sa: ServiceAccount = fixture(name);
            f.service_accounts.insert(key_of(&sa.metadata), Arc::new(sa));
        }
        f
    }

    fn ta(mut self, name: &str, spec: serde_json::Value) -> Self {
        self.tas.insert(("team-a".into(), name.into()), Ok(ta_spec(spec)));
        self
    }

    fn cta(mut self, name: &str, spec: serde_json::Value) -> Self {
        self.ctas.insert(name.into(), Ok(ta_spec(spec)));
        self
    }
}

impl AuthSources for Fake {
    fn trigger_authentication(&self, ns: &str, name: &str) -> Option<AuthEntry> {
        self.tas.get(&(ns.into(), name.into())).cloned()
    }
    fn cluster_trigger_authentication(&self, name: &str) -> Option<AuthEntry> {
        self.ctas.get(name).cloned()
    }
    fn secret(&self, ns: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&(ns.into(), name.into())).cloned()
    }
    fn config_map(&self, ns: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps.get(&(ns.into(), name.into())).cloned()
    }
    fn pod_spec(&self, kind: &str, ns: &str, name: &str) -> Option<PodSpec> {
        let k = (ns.to_string(), name.to_string());
        match kind {
            "Deployment" => self.deployments.get(&k).cloned(),
            "StatefulSet" => self.stateful_sets.get(&k).cloned(),
            _ => None,
        }
    }
    fn service_account(&self, ns: &str, name: &str) -> Option<Arc<ServiceAccount>> {
        self.service_accounts.get(&(ns.into(), name.into())).cloned()
    }
}

/// A ScaledObject in team-a with one trigger.
fn so(target: serde_json::Value, auth: Option<(&str, &str)>, metadata: serde_json::Value) -> ScaledObject {
    let mut trigger = json!({"type": "prometheus", "metadata": metadata});
    if let Some((kind, name)) = auth {
        trigger["authenticationRef"] = json!({"kind": kind, "name": name});
    }
    serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "so", "namespace": "team-a"},
        "spec": {"scaleTargetRef": target, "triggers": [trigger]}
    }))
    .expect("ScaledObject")
}

fn web() -> serde_json::Value {
    json!({"name": "web"})
}

fn with_ta(name: &str) -> ScaledObject {
    so(web(), Some(("TriggerAuthentication", name)), json!({}))
}

fn resolve(f: &Fake, so: &ScaledObject) -> Result<Resolved, String> {
    resolve_trigger(so, 0, f, "keda").map_err(|e| e.to_string())
}

fn params(r: &Resolved) -> Vec<(&str, &str)> {
    r.auth_params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn each_source_kind_fills_its_parameter() {
    let f = Fake::cluster().ta(
        "pg",
        json!({
            "secretTargetRef": [{"parameter": "password", "name": "db-creds", "key": "password"}],
            "configMapTargetRef": [{"parameter": "region", "name": "settings", "key": "region"}],
            "env": [
                {"parameter": "host", "name": "HOST"},
                {"parameter": "sidecar", "name": "SIDECAR_TOKEN", "containerName": "proxy"}
            ]
        }),
    );
    let r = resolve(&f, &with_ta("pg")).expect("resolves");
    assert_eq!(
        params(&r),
        vec![
            ("host", "db.team-a.svc"),
            ("password", "s3cret"),
            ("region", "eu-west-1"),
            ("sidecar", "from-secret-env"),
        ]
    );
    // No `*FromEnv` metadata: the trigger's own env is not needed, so not resolved.
    assert!(r.resolved_env.is_empty());
    assert_eq!(r.pod_identity, None);
}

#[test]
fn later_sources_overwrite_earlier_ones() {
    // env < configMapTargetRef < secretTargetRef, whatever the order in the object.
    let f = Fake::cluster()
        .ta(
            "all",
            json!({
                "secretTargetRef": [{"parameter": "password", "name": "db-creds", "key": "password"}],
                "configMapTargetRef": [
                    {"parameter": "password", "name": "settings", "key": "password"},
                    {"parameter": "host", "name": "settings", "key": "region"}
                ],
                "env": [
                    {"parameter": "password", "name": "DB_PASSWORD"},
                    {"parameter": "host", "name": "HOST"}
                ]
            }),
        )
        .ta(
            "cm-env",
            json!({
                "configMapTargetRef": [{"parameter": "password", "name": "settings", "key": "password"}],
                "env": [{"parameter": "password", "name": "HOST"}]
            }),
        );
    let r = resolve(&f, &with_ta("all")).expect("resolves");
    assert_eq!(params(&r), vec![("host", "eu-west-1"), ("password", "s3cret")]);
    let r = resolve(&f, &with_ta("cm-env")).expect("resolves");
    assert_eq!(params(&r), vec![("password", "from-configmap")]);
}

#[test]
fn cluster_trigger_authentication_reads_the_cluster_object_namespace() {
    let f = Fake::cluster()
        .cta(
            "shared",
            json!({"secretTargetRef": [{"parameter": "token", "name": "cluster-creds", "key": "token"}]}),
        )
        .cta(
            "wrong-ns",
            json!({"secretTargetRef": [{"parameter": "password", "name": "db-creds", "key": "password"}]}),
        );
    let s = so(web(), Some(("ClusterTriggerAuthentication", "shared")), json!({}));
    let r = resolve(&f, &s).expect("resolves");
    assert_eq!(params(&r), vec![("token", "cluster-token")]);
    // db-creds exists, but in team-a, not in the cluster object namespace.
    let s = so(
        web(),
        Some(("ClusterTriggerAuthentication", "wrong-ns")),
        json!({}),
    );
    assert_eq!(
        resolve(&f, &s).expect_err("fails"),
        "Secret keda/db-creds not found (ClusterTriggerAuthentication wrong-ns, parameter password)"
    );
    // A TriggerAuthentication of the same name is not a ClusterTriggerAuthentication.
    let s = so(web(), Some(("ClusterTriggerAuthentication", "pg")), json!({}));
    let f = f.ta("pg", json!({}));
    assert_eq!(
        resolve(&f, &s).expect_err("fails"),
        "ClusterTriggerAuthentication pg not found"
    );
}

#[test]
fn missing_objects_and_keys_are_errors_naming_them() {
    let f = Fake::cluster()
        .ta(
            "no-secret",
            json!({"secretTargetRef": [{"parameter": "password", "name": "nope", "key": "password"}]}),
        )
        .ta(
            "no-key",
            json!({"secretTargetRef": [{"parameter": "password", "name": "db-creds", "key": "pw"}]}),
        )
        .ta(
            "no-cm",
            json!({"configMapTargetRef": [{"parameter": "region", "name": "nope", "key": "region"}]}),
        )
        .ta(
            "no-cm-key",
            json!({"configMapTargetRef": [{"parameter": "region", "name": "settings", "key": "zone"}]}),
        )
        .ta(
            "no-env",
            json!({"env": [{"parameter": "p", "name": "NOT_THERE"}]}),
        )
        .ta(
            "no-container",
            json!({"env": [{"parameter": "p", "name": "HOST", "containerName": "ghost"}]}),
        );
    let cases = [
        ("missing", "TriggerAuthentication team-a/missing not found"),
        (
            "no-secret",
            "Secret team-a/nope not found (TriggerAuthentication team-a/no-secret, parameter password)",
        ),
        (
            "no-key",
            "key \"pw\" not found in Secret team-a/db-creds (TriggerAuthentication team-a/no-key, parameter password)",
        ),
        (
            "no-cm",
            "ConfigMap team-a/nope not found (TriggerAuthentication team-a/no-cm, parameter region)",
        ),
        (
            "no-cm-key",
            "key \"zone\" not found in ConfigMap team-a/settings (TriggerAuthentication team-a/no-cm-key, parameter region)",
        ),
        (
            "no-env",
            "env \"NOT_THERE\" not found in container \"app\" of Deployment team-a/web (TriggerAuthentication team-a/no-env, parameter p)",
        ),
        (
            "no-container",
            "container \"ghost\" not found in Deployment team-a/web",
        ),
    ];
    for (ta, want) in cases {
        assert_eq!(resolve(&f, &with_ta(ta)).expect_err(ta), want);
    }
    let mut f = f;
    f.tas.insert(
        ("team-a".into(), "bad".into()),
        Err(MalformedAuth::Watch("unknown field `secretTargetRefs`".into())),
    );
    assert_eq!(
        resolve(&f, &with_ta("bad")).expect_err("malformed"),
        "TriggerAuthentication team-a/bad is malformed: unknown field `secretTargetRefs`"
    );
}

#[test]
fn trigger_env_follows_kubelet_rules() {
    let f = Fake::cluster();
    let s = so(web(), None, json!({"serverAddressFromEnv": "ENDPOINT"}));
    let env = resolve(&f, &s).expect("resolves").resolved_env;
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("HOST"), Some("db.team-a.svc"));
    assert_eq!(get("DB_PASSWORD"), Some("s3cret"));
    assert_eq!(get("REGION"), Some("eu-west-1"));
    // envFrom with and without prefix, Secrets and ConfigMaps.
    assert_eq!(get("CFG_region"), Some("eu-west-1"));
    assert_eq!(get("DATABASE_URL"), Some("postgres://db:5432"));
    assert_eq!(get("TOKEN"), Some("from-secret-env"));
    // `env` overrides `envFrom`.
    assert_eq!(get("LOG_LEVEL"), Some("info"));
    // $(VAR) of an earlier var (here from envFrom); undefined kept; $$ is a literal $.
    assert_eq!(
        get("QUEUE_URL"),
        Some("https://sqs.eu-west-1.amazonaws.com/123456789012/orders")
    );
    assert_eq!(
        get("ENDPOINT"),
        Some("https://db.team-a.svc:5432/$(UNDEFINED)?cost=$5")
    );
    // Optional refs to missing objects, fieldRef and resourceFieldRef are skipped.
    assert_eq!(get("OPTIONAL_MISSING"), None);
    assert_eq!(get("POD_NAME"), None);
    assert_eq!(get("CPU_LIMIT"), None);
    // The other container's env is not mixed in.
    assert_eq!(get("SIDECAR_TOKEN"), None);
}

#[test]
fn env_source_container_and_target_kinds() {
    let f = Fake::cluster();
    let s = so(
        json!({"name": "web", "envSourceContainerName": "proxy"}),
        None,
        json!({"xFromEnv": "SIDECAR_TOKEN"}),
    );
    let env = resolve(&f, &s).expect("resolves").resolved_env;
    assert_eq!(
        env.get("SIDECAR_TOKEN").map(String::as_str),
        Some("from-secret-env")
    );
    assert_eq!(env.get("HOST"), None);

    let s = so(
        json!({"name": "web", "envSourceContainerName": "ghost"}),
        None,
        json!({"xFromEnv": "A"}),
    );
    assert_eq!(
        resolve(&f, &s).expect_err("fails"),
        "container \"ghost\" not found in Deployment team-a/web"
    );

    // A missing scale target only matters when env is needed.
    let gone = json!({"name": "gone"});
    assert!(resolve(&f, &so(gone.clone(), None, json!({"query": "up"}))).is_ok());
    assert_eq!(
        resolve(&f, &so(gone, None, json!({"xFromEnv": "A"}))).expect_err("fails"),
        "Deployment team-a/gone not found (scale target, needed for *FromEnv metadata)"
    );

    // StatefulSet: a non-optional ref to a missing ConfigMap key fails, naming it.
    let sts = json!({"name": "db", "kind": "StatefulSet", "apiVersion": "apps/v1"});
    assert_eq!(
        resolve(&f, &so(sts, None, json!({"xFromEnv": "PGUSER"}))).expect_err("fails"),
        "key \"missing-key\" not found in ConfigMap team-a/settings (env BROKEN of container \"postgres\" in StatefulSet team-a/db)"
    );

    // Kinds without a readable pod template: empty env, and TA env entries cannot be served.
    let rollout = json!({"name": "web", "kind": "Rollout", "apiVersion": "argoproj.io/v1alpha1"});
    let r = resolve(&f, &so(rollout.clone(), None, json!({"xFromEnv": "HOST"}))).expect("resolves");
    assert!(r.resolved_env.is_empty());
    let f = f.ta("env", json!({"env": [{"parameter": "host", "name": "HOST"}]}));
    let e = resolve(
        &f,
        &so(rollout, Some(("TriggerAuthentication", "env")), json!({})),
    )
    .expect_err("fails");
    assert!(
        e.contains("Rollout.argoproj.io team-a/web has no pod template"),
        "{e}"
    );
}

#[test]
fn workload_identity_comes_from_the_service_account() {
    let aws_workload = json!({"podIdentity": {"provider": "aws", "identityOwner": "workload"}});
    let f = Fake::cluster()
        .ta("irsa", aws_workload.clone())
        .ta(
            "both",
            json!({"podIdentity": {"provider": "aws", "identityOwner": "workload", "roleArn": "arn:aws:iam::1:role/x"}}),
        )
        .ta(
            "keda",
            json!({"podIdentity": {"provider": "aws", "roleArn": "arn:aws:iam::1:role/x"}}),
        )
        .ta("none", json!({"podIdentity": {"provider": "none"}}));
    let r = resolve(&f, &with_ta("irsa")).expect("resolves");
    assert_eq!(
        r.workload_role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/web-reader")
    );
    assert_eq!(r.pod_identity.map(|p| p.provider).as_deref(), Some("aws"));

    let r = resolve(&f, &with_ta("keda")).expect("resolves");
    assert_eq!(r.workload_role_arn, None);
    assert_eq!(
        r.pod_identity.and_then(|p| p.role_arn).as_deref(),
        Some("arn:aws:iam::1:role/x")
    );
    assert_eq!(
        resolve(&f, &with_ta("none")).expect("resolves").pod_identity,
        None
    );

    let e = resolve(&f, &with_ta("both")).expect_err("fails");
    assert!(
        e.contains("roleArn cannot be used with identityOwner: workload"),
        "{e}"
    );

    // The StatefulSet has no serviceAccountName: `default`, which has no role annotation.
    let sts = json!({"name": "db", "kind": "StatefulSet"});
    let e = resolve(&f, &so(sts, Some(("TriggerAuthentication", "irsa")), json!({}))).expect_err("fails");
    assert_eq!(
        e,
        "annotation eks.amazonaws.com/role-arn not found on ServiceAccount team-a/default (identityOwner: workload of TriggerAuthentication team-a/irsa)"
    );

    let mut f = f;
    f.service_accounts.remove(&("team-a".into(), "web-sa".into()));
    let e = resolve(&f, &with_ta("irsa")).expect_err("fails");
    assert!(e.starts_with("ServiceAccount team-a/web-sa not found"), "{e}");
}

#[test]
fn unsupported_stores_and_providers_are_named() {
    let cases = [
        (
            json!({"hashiCorpVault": {"address": "https://vault:8200", "authentication": "token"}}),
            "hashiCorpVault is not supported yet",
        ),
        (
            json!({"azureKeyVault": {"vaultUri": "https://v.vault.azure.net"}}),
            "azureKeyVault is not supported yet",
        ),
        (
            json!({"gcpSecretManager": {"secrets": []}}),
            "gcpSecretManager is not supported yet",
        ),
        (
            json!({"awsSecretManager": {"secrets": []}}),
            "awsSecretManager is not supported yet",
        ),
        (
            json!({"boundServiceAccountToken": [{"parameter": "token", "serviceAccountName": "x"}]}),
            "boundServiceAccountToken is not supported yet",
        ),
        (
            json!({"oauth2": {"type": "clientCredentials"}}),
            "oauth2 is not supported yet",
        ),
        (
            json!({"podIdentity": {"provider": "azure-workload"}}),
            "podIdentity provider azure-workload is not supported yet",
        ),
        (
            json!({"podIdentity": {"provider": "gcp"}}),
            "podIdentity provider gcp is not supported yet",
        ),
        (
            json!({"filePath": "creds.json"}),
            "filePath is only allowed in a ClusterTriggerAuthentication",
        ),
    ];
    for (spec, want) in cases {
        let f = Fake::cluster().ta("x", spec.clone());
        let e = resolve(&f, &with_ta("x")).expect_err(want);
        assert!(e.starts_with(want), "{spec}: {e}");
        assert!(e.contains("TriggerAuthentication team-a/x"), "{e}");
    }
    let f = Fake::cluster().cta("file", json!({"filePath": "creds.json"}));
    let e = resolve(
        &f,
        &so(web(), Some(("ClusterTriggerAuthentication", "file")), json!({})),
    )
    .expect_err("fails");
    assert!(
        e.starts_with("filePath is not supported yet (ClusterTriggerAuthentication file"),
        "{e}"
    );
    // An empty list of bound tokens asks for nothing.
    let f = Fake::cluster().ta("empty", json!({"boundServiceAccountToken": []}));
    assert!(resolve(&f, &with_ta("empty")).is_ok());
}

#[test]
fn expansion_edge_cases() {
    let env = [("A".to_string(), "1".to_string())].into_iter().collect();
    assert_eq!(expand("$(A)$(A)", &env), "11");
    assert_eq!(expand("$$(A)", &env), "$(A)");
    assert_eq!(expand("$(A", &env), "$(A");
    assert_eq!(expand("a$b$", &env), "a$b$");
    assert_eq!(expand("$(B)", &env), "$(B)");
    assert_eq!(expand("", &env), "");
}

const LOCAL: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: pg
  namespace: team-a
spec:
  secretTargetRef:
    - parameter: password
      name: db-creds
      key: password
    - parameter: username
      name: db-creds
      key: username
---
apiVersion: v1
kind: Secret
metadata:
  name: db-creds
  namespace: team-a
data:
  password: czNjcmV0
  username: b2xk
stringData:
  username: admin
---
apiVersion: v1
kind: Pod
metadata:
  name: p1
  namespace: team-a
  labels: {app: web}
spec:
  containers: [{name: app, image: x}]
  nodeName: n1
status:
  phase: Running
"#;

fn docs(text: &str) -> Vec<serde_yaml::Value> {
    ebb::source::files::parse_file(std::path::Path::new("auth.yaml"), text)
        .expect("parses")
        .others
}

#[test]
fn local_resolver_from_documents_and_updates() {
    let resolver = LocalResolver::from_documents(&docs(LOCAL));
    let mut config = ScalerConfig::default();
    resolver
        .resolve(&with_ta("pg"), 0, &mut config)
        .expect("resolves");
    // `data` is base64; `stringData` wins over `data`, as the API server would store it.
    assert_eq!(
        config.auth_params.get("password").map(String::as_str),
        Some("s3cret")
    );
    assert_eq!(
        config.auth_params.get("username").map(String::as_str),
        Some("admin")
    );
    let pods = resolver.pod_index();
    assert!(pods.is_ready());
    assert_eq!(
        pods.count("team-a", &selector::parse("app=web").expect("sel"), false),
        1
    );

    // Same documents: nothing to do. New documents: the next resolve sees them.
    assert!(!resolver.update(&docs(LOCAL)));
    let without_secret: String = LOCAL.split("---").next().unwrap_or_default().to_string();
    assert!(resolver.update(&docs(&without_secret)));
    let e = resolver
        .resolve(&with_ta("pg"), 0, &mut ScalerConfig::default())
        .expect_err("fails");
    assert_eq!(
        e.to_string(),
        "Secret team-a/db-creds not found (TriggerAuthentication team-a/pg, parameter password)"
    );
    // Pods went away with their document; the index stays usable (zero pods).
    assert_eq!(
        pods.count("team-a", &selector::parse("app=web").expect("sel"), false),
        0
    );
    assert!(pods.is_ready());

    // A malformed TriggerAuthentication is named when used.
    let bad = "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata:\n  name: pg\n  namespace: team-a\nspec:\n  secretTargetRef: nope\n";
    assert!(resolver.update(&docs(bad)));
    let e = resolver
        .resolve(&with_ta("pg"), 0, &mut ScalerConfig::default())
        .expect_err("fails");
    assert!(
        e.to_string()
            .starts_with("TriggerAuthentication team-a/pg is malformed"),
        "{e}"
    );
}

#[test]
fn local_resolver_reads_fixture_json_and_cluster_namespace() {
    let mut all: Vec<serde_yaml::Value> = [
        "secret-db-creds.json",
        "secret-env-source.json",
        "secret-keda-cluster-creds.json",
        "configmap-settings.json",
        "deployment-web.json",
        "serviceaccount-web-sa.json",
    ]
    .iter()
    .map(|n| fixture::<serde_yaml::Value>(n))
    .collect();
    all.extend(docs(
        "apiVersion: keda.sh/v1alpha1\nkind: ClusterTriggerAuthentication\nmetadata:\n  name: shared\nspec:\n  secretTargetRef:\n    - {parameter: token, name: cluster-creds, key: token}\n  podIdentity: {provider: aws, identityOwner: workload}\n",
    ));
    let resolver = LocalResolver::from_documents(&all).with_cluster_object_namespace("keda");
    let mut config = ScalerConfig::default();
    let s = so(
        web(),
        Some(("ClusterTriggerAuthentication", "shared")),
        json!({"regionFromEnv": "REGION"}),
    );
    resolver.resolve(&s, 0, &mut config).expect("resolves");
    assert_eq!(
        config.auth_params.get("token").map(String::as_str),
        Some("cluster-token")
    );
    assert_eq!(
        config.resolved_env.get("REGION").map(String::as_str),
        Some("eu-west-1")
    );
    assert_eq!(
        config.workload_role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/web-reader")
    );
    // No Pod documents: the index reports it has nothing to count from.
    assert!(!resolver.pod_index().is_ready());
}

fn init<K: Clone>(items: Vec<K>) -> Vec<Event<K>> {
    let mut events = vec![Event::Init];
    events.extend(items.into_iter().map(Event::InitApply));
    events.push(Event::InitDone);
    events
}

#[test]
fn kube_resolver_reads_its_stores() {
    let (resolver, mut w) = KubeResolver::with_writers("keda");
    let ta: DeserializeGuard<TriggerAuthentication> = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "pg", "namespace": "team-a", "resourceVersion": "1", "uid": "u1"},
        "spec": {
            "secretTargetRef": [{"parameter": "password", "name": "db-creds", "key": "password"}],
            "env": [{"parameter": "region", "name": "REGION"}],
            "podIdentity": {"provider": "aws", "identityOwner": "workload"}
        }
    }))
    .expect("TA");
    let bad: DeserializeGuard<TriggerAuthentication> = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "bad", "namespace": "team-a"},
        "spec": {"secretTargetRef": "not-a-list"}
    }))
    .expect("guarded");
    for e in init(vec![ta, bad]) {
        w.trigger_authentications.apply_watcher_event(&e);
    }
    let cta = ClusterTriggerAuthentication::new(
        "shared",
        ClusterTriggerAuthenticationSpec {
            spec: ta_spec(
                json!({"secretTargetRef": [{"parameter": "token", "name": "cluster-creds", "key": "token"}]}),
            ),
        },
    );
    for e in init(vec![DeserializeGuard(Ok(cta))]) {
        w.cluster_trigger_authentications.apply_watcher_event(&e);
    }
    for e in init(vec![
        fixture::<Secret>("secret-keda-cluster-creds.json"),
        fixture::<Secret>("secret-env-source.json"),
    ]) {
        w.secrets.apply_watcher_event(&e);
    }
    for e in init(vec![fixture::<ConfigMap>("configmap-settings.json")]) {
        w.config_maps.apply_watcher_event(&e);
    }
    for e in init(vec![fixture::<Deployment>("deployment-web.json")]) {
        w.deployments.apply_watcher_event(&e);
    }
    for e in init(Vec::<StatefulSet>::new()) {
        w.stateful_sets.apply_watcher_event(&e);
    }
    for e in init(vec![fixture::<ServiceAccount>("serviceaccount-web-sa.json")]) {
        w.service_accounts.apply_watcher_event(&e);
    }

    // db-creds has not arrived yet: the trigger fails, naming it.
    let s = with_ta("pg");
    let e = resolver
        .resolve(&s, 0, &mut ScalerConfig::default())
        .expect_err("no secret yet");
    assert!(
        e.to_string().starts_with("Secret team-a/db-creds not found"),
        "{e}"
    );

    // The Secret is created: the next resolve (a registry rebuild) heals the trigger.
    w.secrets
        .apply_watcher_event(&Event::Apply(fixture::<Secret>("secret-db-creds.json")));
    let mut config = ScalerConfig::default();
    resolver.resolve(&s, 0, &mut config).expect("resolves");
    assert_eq!(
        config.auth_params.get("password").map(String::as_str),
        Some("s3cret")
    );
    assert_eq!(
        config.auth_params.get("region").map(String::as_str),
        Some("eu-west-1")
    );
    assert_eq!(
        config.workload_role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/web-reader")
    );

    let mut config = ScalerConfig::default();
    let s = so(web(), Some(("ClusterTriggerAuthentication", "shared")), json!({}));
    resolver.resolve(&s, 0, &mut config).expect("resolves");
    assert_eq!(
        config.auth_params.get("token").map(String::as_str),
        Some("cluster-token")
    );

    let e = resolver
        .resolve(&with_ta("bad"), 0, &mut ScalerConfig::default())
        .expect_err("malformed");
    assert!(
        e.to_string()
            .starts_with("TriggerAuthentication team-a/bad is malformed"),
        "{e}"
    );

    // Deleting the Secret breaks the trigger again.
    w.secrets
        .apply_watcher_event(&Event::Delete(fixture::<Secret>("secret-db-creds.json")));
    assert!(
        resolver
            .resolve(&with_ta("pg"), 0, &mut ScalerConfig::default())
            .is_err()
    );
}

#[test]
fn pod_index_counts_a_real_pod_list() {
    let list: List<Pod> = fixture("pods-team-a.json");
    let index = PodIndex::from_pods(list.items);
    let web = selector::parse("app=web").expect("sel");
    // Two running and one pending pod; the Succeeded job pod is not counted.
    assert_eq!(index.count("team-a", &web, false), 3);
    // Only node-a: the pending pod has no node, the job's node-b is not counted.
    assert_eq!(index.count("team-a", &web, true), 1);
    let not_job = selector::parse("app=web,!job-name").expect("sel");
    assert_eq!(index.count("team-a", &not_job, false), 3);
    assert_eq!(index.count("team-b", &web, false), 0);
}

#[test]
fn trigger_authentication_objects_parse_as_written() {
    // The same TA/CTA shapes as kubectl would send, through the CRD types.
    let ta: TriggerAuthentication = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "pg", "namespace": "team-a"},
        "spec": {"secretTargetRef": [{"parameter": "p", "name": "n", "key": "k"}]}
    }))
    .expect("TA");
    assert_eq!(ta.spec.secret_target_ref.len(), 1);
}

const HEALING_SO: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: api
spec:
  scaleTargetRef:
    name: api
  triggers:
    - type: metrics-api
      metadata:
        url: http://api.default.svc/stats
        valueLocation: queue.depth
        targetValue: "5"
        authModes: bearer
      authenticationRef:
        name: api-auth
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: api-auth
spec:
  secretTargetRef:
    - {parameter: bearerToken, name: api-token, key: token}
"#;

#[test]
fn local_directory_heals_a_trigger_when_its_secret_appears() {
    use ebb::scalers::registry::{ObjectKey, Registry, RegistryConfig};
    use ebb::source::files::LocalSource;

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("so.yaml"), HEALING_SO).expect("write");
    let resolver = Arc::new(LocalResolver::from_documents(&[]).with_cluster_object_namespace("keda"));
    let registry = Registry::new(RegistryConfig {
        resolver: resolver.clone(),
        ..Default::default()
    });
    let r = resolver.clone();
    let mut src = LocalSource::new(dir.path()).with_documents_callback(Box::new(move |docs, registry| {
        if r.update(docs) {
            registry.rebuild_all();
        }
    }));
    let key = ObjectKey::new("default", "api");
    let trigger_error = |registry: &Registry| {
        registry
            .get(&key)
            .expect("registered")
            .triggers
            .first()
            .and_then(|t| t.scaler.as_ref().err().map(|e| e.to_string()))
    };

    src.poll(&registry);
    assert_eq!(
        trigger_error(&registry).as_deref(),
        Some(
            "Secret default/api-token not found (TriggerAuthentication default/api-auth, parameter bearerToken)"
        )
    );

    std::fs::write(
        dir.path().join("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-token\nstringData:\n  token: t0ken\n",
    )
    .expect("write");
    src.poll(&registry);
    assert_eq!(trigger_error(&registry), None);
}

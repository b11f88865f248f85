//! Every shipped manifest parses into its typed Kubernetes object without losing a field, the
//! Deployments are hardened, kustomize builds them all, and the RBAC covers the code's API calls.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use k8s_openapi::{
    api::{
        admissionregistration::v1::ValidatingWebhookConfiguration,
        apps::v1::Deployment,
        core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apimachinery::pkg::util::intstr::IntOrString,
    kube_aggregator::pkg::apis::apiregistration::v1::APIService,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Parses `doc` as `T` and checks that serializing it back gives the same JSON, so a misspelt
/// or misplaced field (which serde would silently drop) fails the test.
fn round_trip<T: DeserializeOwned + Serialize>(kind: &str, doc: serde_yaml::Value) {
    let original = serde_json::to_value(&doc).expect("yaml to json");
    let typed: T = serde_yaml::from_value(doc).unwrap_or_else(|e| panic!("{kind}: {e}"));
    let back = serde_json::to_value(&typed).expect("serialize");
    assert_eq!(
        whole_numbers(back),
        whole_numbers(original),
        "{kind} loses or changes fields when typed"
    );
}

/// JSON with every integral float written as an integer: a CRD's `minimum: 1` comes back from
/// k8s-openapi's `f64` as `1.0`, the same number.
fn whole_numbers(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(whole_numbers).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, whole_numbers(v))).collect()),
        other => other,
    }
}

fn check(kind: &str, doc: serde_yaml::Value) {
    match kind {
        "APIService" => round_trip::<APIService>(kind, doc),
        "CustomResourceDefinition" => round_trip::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(kind, doc),
        "ClusterRole" => round_trip::<ClusterRole>(kind, doc),
        "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(kind, doc),
        "ConfigMap" => round_trip::<ConfigMap>(kind, doc),
        "Deployment" => round_trip::<Deployment>(kind, doc),
        "Namespace" => round_trip::<Namespace>(kind, doc),
        "PodDisruptionBudget" => round_trip::<PodDisruptionBudget>(kind, doc),
        "Role" => round_trip::<Role>(kind, doc),
        "RoleBinding" => round_trip::<RoleBinding>(kind, doc),
        "Secret" => round_trip::<Secret>(kind, doc),
        "Service" => round_trip::<Service>(kind, doc),
        "ServiceAccount" => round_trip::<ServiceAccount>(kind, doc),
        "ValidatingWebhookConfiguration" => round_trip::<ValidatingWebhookConfiguration>(kind, doc),
        "ScaledObject" => {
            serde_yaml::from_value::<ebb::crd::ScaledObject>(doc).unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        other => panic!("no typed check for kind {other}"),
    }
}

fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .collect();
    files.sort();
    files
}

/// Every resource document of `manifests/` (the kustomization itself excluded).
fn manifest_docs() -> Vec<serde_yaml::Value> {
    yaml_files("manifests")
        .into_iter()
        .chain(yaml_files("manifests/crd"))
        .filter(|p| p.file_name().and_then(|n| n.to_str()) != Some("kustomization.yaml"))
        .flat_map(|p| documents(&std::fs::read_to_string(p).expect("read")))
        .collect()
}

fn typed<T: DeserializeOwned>(kind: &str, name: &str) -> T {
    let doc = manifest_docs()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in manifests/"));
    serde_yaml::from_value(doc).expect("typed")
}

#[test]
fn manifests_and_examples_parse_into_typed_objects() {
    let mut seen = 0;
    for dir in ["manifests", "examples/local"] {
        for path in yaml_files(dir) {
            let text = std::fs::read_to_string(&path).expect("read");
            for doc in documents(&text) {
                let kind = doc["kind"].as_str().expect("kind").to_string();
                if kind == "Kustomization" {
                    continue;
                }
                check(&kind, doc);
                seen += 1;
            }
        }
    }
    assert!(seen >= 25, "only {seen} documents checked");
    let svc: APIService = typed("APIService", "v1beta1.external.metrics.k8s.io");
    let spec = svc.spec.expect("spec");
    let target = spec.service.expect("service");
    assert_eq!(
        (target.namespace.as_deref(), target.name.as_deref(), target.port),
        (Some("ebb"), Some("ebb-metrics-apiserver"), Some(443))
    );
}

/// The pod runs as `name`'s ServiceAccount, non-root, one hardened container from the `ebb`
/// image; returns that container.
fn assert_hardened<'a>(
    name: &str,
    pod: &'a k8s_openapi::api::core::v1::PodSpec,
) -> &'a k8s_openapi::api::core::v1::Container {
    assert_eq!(pod.service_account_name.as_deref(), Some(name));
    let pod_sc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_sc.run_as_non_root, Some(true), "{name}");
    let [c] = pod.containers.as_slice() else {
        panic!("{name}: one container expected");
    };
    // Kustomize's `images:` rewrites this one placeholder.
    assert_eq!(c.image.as_deref(), Some("ebb"), "{name}");
    let sc = c.security_context.as_ref().expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true), "{name}");
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()]),
        "{name}"
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{name}"
    );
    c
}

#[test]
fn deployments_are_hardened_and_probed() {
    let names = ["ebb-operator", "ebb-metrics-apiserver", "ebb-webhooks"];
    for name in names {
        let d: Deployment = typed("Deployment", name);
        let pod = d
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod spec");
        let c = assert_hardened(name, pod);
        for (probe, path) in [(&c.liveness_probe, "/livez"), (&c.readiness_probe, "/readyz")] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("httpGet probe");
            assert_eq!(get.path.as_deref(), Some(path), "{name}");
            assert_eq!(get.port, IntOrString::String("metrics".into()), "{name}");
        }
        let metrics_port = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("metrics"));
        assert_eq!(metrics_port.map(|p| p.container_port), Some(8080), "{name}");
        let res = c.resources.as_ref().expect("resources");
        for key in ["cpu", "memory"] {
            assert!(
                res.requests.as_ref().is_some_and(|r| r.contains_key(key)),
                "{name} request {key}"
            );
            assert!(
                res.limits.as_ref().is_some_and(|r| r.contains_key(key)),
                "{name} limit {key}"
            );
        }
        let volumes = pod.volumes.as_ref().expect("volumes");
        let certs = volumes
            .iter()
            .find_map(|v| v.secret.as_ref().map(|s| (v.name.as_str(), s)))
            .expect("secret volume");
        assert_eq!(certs.1.secret_name.as_deref(), Some("ebb-certs"));
        assert_eq!(certs.1.optional, Some(true));
        let tmp = volumes.iter().find(|v| v.empty_dir.is_some()).expect("emptyDir");
        let mounts = c.volume_mounts.as_ref().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.name == certs.0 && m.mount_path == "/certs" && m.read_only == Some(true)),
            "{name}: certs mount"
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.name == tmp.name && m.mount_path == "/tmp"),
            "{name}: /tmp"
        );
    }

    let operator: Deployment = typed("Deployment", "ebb-operator");
    let args = operator
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0]
        .args
        .clone();
    // The manifest's args are real flags of `ebb operator`.
    let argv = std::iter::once("ebb".to_string()).chain(args.unwrap_or_default());
    let cli = <ebb::cli::Cli as clap::Parser>::try_parse_from(argv).expect("operator args parse");
    let ebb::cli::Command::Operator(op) = cli.command else {
        panic!("the operator Deployment must run `ebb operator`");
    };
    assert!(op.leader.leader_elect && op.leader.enable_cert_rotation);

    let server: Deployment = typed("Deployment", "ebb-metrics-apiserver");
    let spec = server.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.expect("pod");
    assert!(!pod.topology_spread_constraints.unwrap_or_default().is_empty());
    assert_eq!(
        pod.containers[0].args.as_deref().expect("args"),
        [
            "metrics-server",
            "--secure-port=6443",
            "--tls-cert-file=/certs/tls.crt",
            "--tls-private-key-file=/certs/tls.key",
            "--cert-dir=/certs"
        ]
    );
    let pdb: PodDisruptionBudget = typed("PodDisruptionBudget", "ebb-metrics-apiserver");
    let pdb = pdb.spec.expect("spec");
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert_eq!(pdb.selector, spec.selector.into());
}

/// The activator: two hardened replicas probed on the admin port, a PDB, a Service per port,
/// and args that are real flags of `ebb activator` (cluster mode: no `--local`).
#[test]
fn the_activator_is_hardened_probed_and_disruption_bounded() {
    let d: Deployment = typed("Deployment", "ebb-activator");
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().expect("pod");
    assert!(
        !pod.topology_spread_constraints
            .clone()
            .unwrap_or_default()
            .is_empty()
    );
    let c = assert_hardened("ebb-activator", pod);
    for (probe, path) in [(&c.liveness_probe, "/livez"), (&c.readiness_probe, "/readyz")] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("httpGet probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("admin".into()));
    }
    let ports: BTreeSet<(String, i32)> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        BTreeSet::from([("http".to_string(), 8080), ("admin".to_string(), 9090)])
    );
    let res = c.resources.as_ref().expect("resources");
    assert!(res.requests.as_ref().is_some_and(|r| r.contains_key("memory")));
    assert!(res.limits.as_ref().is_some_and(|r| r.contains_key("memory")));
    let argv = std::iter::once("ebb".to_string()).chain(c.args.clone().unwrap_or_default());
    let cli = <ebb::cli::Cli as clap::Parser>::try_parse_from(argv).expect("activator args parse");
    let ebb::cli::Command::Activator(args) = cli.command else {
        panic!("the activator Deployment must run `ebb activator`");
    };
    assert!(args.local.is_none(), "cluster mode");
    assert_eq!((args.proxy_port, args.metrics_port), (8080, 9090));

    let pdb: PodDisruptionBudget = typed("PodDisruptionBudget", "ebb-activator");
    let pdb = pdb.spec.expect("spec");
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert_eq!(pdb.selector, spec.selector.into());

    for (service, port, target) in [
        ("ebb-activator", 8080, "http"),
        ("ebb-activator-admin", 9090, "admin"),
    ] {
        let svc: Service = typed("Service", service);
        let spec = svc.spec.expect("spec");
        assert_eq!(
            spec.selector
                .and_then(|s| s.get("app.kubernetes.io/name").cloned())
                .as_deref(),
            Some("ebb-activator")
        );
        let ports = spec.ports.expect("ports");
        assert_eq!(ports.len(), 1, "{service}");
        assert_eq!(ports[0].port, port, "{service}");
        assert_eq!(
            ports[0].target_port,
            Some(IntOrString::String(target.into())),
            "{service}"
        );
    }
}

#[test]
fn services_and_webhooks_point_at_the_right_ports() {
    let ports = |name: &str| -> BTreeSet<(String, i32, String)> {
        let svc: Service = typed("Service", name);
        svc.spec
            .expect("spec")
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| {
                let target = match p.target_port {
                    Some(IntOrString::String(s)) => s,
                    other => format!("{other:?}"),
                };
                (p.name.unwrap_or_default(), p.port, target)
            })
            .collect()
    };
    let set = |v: &[(&str, i32, &str)]| -> BTreeSet<(String, i32, String)> {
        v.iter()
            .map(|(a, b, c)| (a.to_string(), *b, c.to_string()))
            .collect()
    };
    assert_eq!(
        ports("ebb-metrics-apiserver"),
        set(&[("https", 443, "https"), ("metrics", 8080, "metrics")])
    );
    assert_eq!(ports("ebb-operator"), set(&[("metrics", 8080, "metrics")]));
    assert!(ports("ebb-webhooks").contains(&("https".to_string(), 443, "https".to_string())));

    let vwc: ValidatingWebhookConfiguration = typed("ValidatingWebhookConfiguration", "ebb-admission");
    let hooks = vwc.webhooks.expect("webhooks");
    let names: Vec<_> = hooks.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "vscaledobject.kb.io",
            "vscaledjob.kb.io",
            "vstriggerauthentication.kb.io",
            "vsclustertriggerauthentication.kb.io",
            "vhttpaddon.ebb.dev"
        ]
    );
    for w in &hooks {
        assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(w.side_effects, "None");
        assert_eq!(w.timeout_seconds, Some(10));
        assert_eq!(w.admission_review_versions, ["v1"]);
        let svc = w.client_config.service.as_ref().expect("service");
        assert_eq!(
            (svc.namespace.as_str(), svc.name.as_str(), svc.port),
            ("ebb", "ebb-webhooks", Some(443))
        );
        let rule = &w.rules.as_ref().expect("rules")[0];
        assert_eq!(
            rule.operations.as_deref(),
            Some(&["CREATE".to_string(), "UPDATE".to_string()][..])
        );
    }
    let so = &hooks[0].client_config.service.as_ref().expect("service");
    assert_eq!(
        so.path.as_deref(),
        Some("/validate-keda-sh-v1alpha1-scaledobject")
    );
}

#[test]
fn kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string("manifests/kustomization.yaml").expect("kustomization");
    let k: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    let listed: BTreeSet<String> = k["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("string").to_string())
        .collect();
    let mut present: BTreeSet<String> = yaml_files("manifests")
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .filter(|n| n != "kustomization.yaml")
        .collect();
    if Path::new("manifests/crd").is_dir() {
        for p in yaml_files("manifests/crd") {
            if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                present.insert(format!("crd/{n}"));
            }
        }
    }
    assert_eq!(listed, present, "kustomization resources vs files in manifests/");
    let images = &k["images"][0];
    assert_eq!(images["name"].as_str(), Some("ebb"));
    assert_eq!(images["newName"].as_str(), Some("ghcr.io/ebb-autoscaling/ebb"));
    assert_eq!(images["newTag"].as_str(), Some("0.1.0"));
}

/// The real `kubectl kustomize` output (what `kubectl apply -k` sends) parses and names the image.
#[test]
fn kustomize_build_renders_every_object() {
    let bin = std::env::var("EBB_KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    let out = Command::new(&bin)
        .args(["kustomize", "manifests"])
        .output()
        .unwrap_or_else(|e| panic!("running {bin} (set EBB_KUBECTL): {e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let docs = documents(&text);
    assert_eq!(docs.len(), manifest_docs().len());
    for doc in docs {
        let kind = doc["kind"].as_str().expect("kind").to_string();
        if kind == "Deployment" {
            let d: Deployment = serde_yaml::from_value(doc).expect("deployment");
            let image = d.spec.expect("spec").template.spec.expect("pod").containers[0]
                .image
                .clone();
            assert_eq!(image.as_deref(), Some("ghcr.io/ebb-autoscaling/ebb:0.1.0"));
        } else {
            check(&kind, doc);
        }
    }
}

/// `scripts/check-rbac` passes, and its reading of the RBAC agrees with the typed objects.
#[test]
fn rbac_covers_the_api_calls_in_src() {
    let out = Command::new("bash")
        .arg("scripts/check-rbac")
        .output()
        .expect("run scripts/check-rbac");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("create  tokenreviews.authentication.k8s.io"),
        "{stdout}"
    );

    let dump = Command::new("bash")
        .args(["scripts/check-rbac", "--dump-grants"])
        .output()
        .expect("run scripts/check-rbac --dump-grants");
    assert!(dump.status.success());
    let from_script: BTreeSet<String> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(from_script, typed_grants(), "the script misreads manifests/");
}

/// The same "sa group resource verb" table the script derives, computed from typed objects.
fn typed_grants() -> BTreeSet<String> {
    let mut rules: Vec<(String, Vec<k8s_openapi::api::rbac::v1::PolicyRule>)> = vec![
        (
            "ClusterRole/system:auth-delegator".into(),
            vec![
                rule("authentication.k8s.io", "tokenreviews", &["create"]),
                rule("authorization.k8s.io", "subjectaccessreviews", &["create"]),
            ],
        ),
        (
            "Role/extension-apiserver-authentication-reader".into(),
            vec![rule("", "configmaps", &["get", "list", "watch"])],
        ),
    ];
    let mut bindings = Vec::new();
    for doc in manifest_docs() {
        match doc["kind"].as_str() {
            Some("ClusterRole") => {
                let r: ClusterRole = serde_yaml::from_value(doc).expect("role");
                rules.push((
                    format!("ClusterRole/{}", r.metadata.name.unwrap_or_default()),
                    r.rules.unwrap_or_default(),
                ));
            }
            Some("Role") => {
                let r: Role = serde_yaml::from_value(doc).expect("role");
                rules.push((
                    format!("Role/{}", r.metadata.name.unwrap_or_default()),
                    r.rules.unwrap_or_default(),
                ));
            }
            Some("ClusterRoleBinding") => {
                let b: ClusterRoleBinding = serde_yaml::from_value(doc).expect("binding");
                bindings.push((b.role_ref, b.subjects.unwrap_or_default()));
            }
            Some("RoleBinding") => {
                let b: RoleBinding = serde_yaml::from_value(doc).expect("binding");
                bindings.push((b.role_ref, b.subjects.unwrap_or_default()));
            }
            _ => {}
        }
    }
    let mut grants = BTreeSet::new();
    for (role_ref, subjects) in bindings {
        let key = format!("{}/{}", role_ref.kind, role_ref.name);
        for s in subjects.iter().filter(|s| s.kind == "ServiceAccount") {
            for (_, rs) in rules.iter().filter(|(k, _)| *k == key) {
                for r in rs {
                    for g in r.api_groups.iter().flatten() {
                        for res in r.resources.iter().flatten() {
                            for v in &r.verbs {
                                let g = if g.is_empty() { "core" } else { g.as_str() };
                                grants.insert(format!("{} {g} {res} {v}", s.name));
                            }
                        }
                    }
                }
            }
        }
    }
    grants
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> k8s_openapi::api::rbac::v1::PolicyRule {
    k8s_openapi::api::rbac::v1::PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(vec![resource.to_string()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

// docs/metrics.md and the Grafana dashboard are checked against a live scrape in
// tests/metrics_scrape.rs.

/// `manifests/crd/keda.sh.yaml` is what `ebb crd` prints today (regenerate with
/// `cargo run -- crd > manifests/crd/keda.sh.yaml`), and it is a structural schema.
#[test]
fn committed_crds_match_the_rust_types() {
    let generated = ebb::crd::crds_yaml().expect("crds render");
    let committed = std::fs::read_to_string("manifests/crd/keda.sh.yaml").expect("read");
    assert!(
        committed == generated,
        "manifests/crd/keda.sh.yaml is stale: run `cargo run -- crd > manifests/crd/keda.sh.yaml`"
    );
    let crds: Vec<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = serde_yaml::Deserializer::from_str(&committed)
        .map(|d| serde_yaml::from_value(serde_yaml::Value::deserialize(d).expect("yaml")).expect("crd"))
        .collect();
    let names: Vec<&str> = crds.iter().filter_map(|c| c.metadata.name.as_deref()).collect();
    assert_eq!(
        names,
        [
            "scaledobjects.keda.sh",
            "triggerauthentications.keda.sh",
            "clustertriggerauthentications.keda.sh",
            "scaledjobs.keda.sh",
            "httpscaledobjects.http.keda.sh",
            "interceptorroutes.http.keda.sh"
        ]
    );
    assert_eq!(
        crds[3].spec.names.short_names.as_deref(),
        Some(&["sj".to_string()][..])
    );
    assert!(
        crds[3].spec.versions[0]
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some())
    );
    let sj_columns: Vec<&str> = crds[3].spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        sj_columns,
        [
            "Min",
            "Max",
            "Ready",
            "Active",
            "Paused",
            "Triggers",
            "Authentications",
            "Age"
        ]
    );
    assert_eq!(
        crds[0].spec.names.short_names.as_deref(),
        Some(&["so".to_string()][..])
    );
    assert_eq!(crds[2].spec.scope, "Cluster");
    // Structural schemas may not use `additionalProperties: true`.
    assert!(!committed.contains("additionalProperties: true"));
    let columns: Vec<&str> = crds[0].spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "ScaleTargetKind",
            "ScaleTargetName",
            "Min",
            "Max",
            "Ready",
            "Active",
            "Fallback",
            "Paused",
            "Triggers",
            "Authentications",
            "Age"
        ]
    );
}

/// The HTTP add-on's two CRDs as the add-on's controller-gen output has them: short name,
/// printer columns, status subresource, required fields, defaults, list-map keys, CEL rules.
#[test]
fn http_add_on_crds_carry_the_add_ons_schema() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds = ebb::crd::crds();
    let by_name = |n: &str| -> &CustomResourceDefinition {
        crds.iter()
            .find(|c| c.metadata.name.as_deref() == Some(n))
            .expect(n)
    };
    let schema_json = |crd: &CustomResourceDefinition| -> serde_json::Value {
        let v = &crd.spec.versions[0];
        serde_json::to_value(v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref())).expect("json")
    };
    let columns = |crd: &CustomResourceDefinition| -> Vec<(String, String)> {
        crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.json_path.clone()))
            .collect()
    };

    let httpso = by_name("httpscaledobjects.http.keda.sh");
    assert_eq!(httpso.spec.group, "http.keda.sh");
    assert_eq!(httpso.spec.versions[0].name, "v1alpha1");
    assert_eq!(
        httpso.spec.names.short_names.as_deref(),
        Some(&["httpso".to_string()][..])
    );
    assert!(
        httpso.spec.versions[0]
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let cols: Vec<String> = columns(httpso).into_iter().map(|c| c.0).collect();
    assert_eq!(
        cols,
        [
            "TargetWorkload",
            "TargetService",
            "MinReplicas",
            "MaxReplicas",
            "Age",
            "Ready"
        ]
    );
    let s = schema_json(httpso);
    let spec = &s["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["scaleTargetRef"]));
    let target = &spec["properties"]["scaleTargetRef"];
    assert_eq!(target["required"], serde_json::json!(["service"]));
    assert_eq!(
        target["x-kubernetes-validations"],
        serde_json::json!([{"rule": "has(self.portName) != has(self.port)",
            "message": "must define either the 'portName' or the 'port'"}])
    );
    assert!(target["properties"]["name"].get("default").is_none());
    let failover = &spec["properties"]["coldStartTimeoutFailoverRef"];
    assert_eq!(
        failover["x-kubernetes-validations"],
        target["x-kubernetes-validations"]
    );
    assert_eq!(failover["properties"]["timeoutSeconds"]["default"], 30);
    assert_eq!(spec["properties"]["headers"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        spec["properties"]["headers"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["name"])
    );
    assert_eq!(
        spec["properties"]["headers"]["items"]["properties"]["name"]["minLength"],
        1
    );
    let metric = &spec["properties"]["scalingMetric"]["properties"];
    assert_eq!(metric["concurrency"]["properties"]["targetValue"]["default"], 100);
    assert_eq!(metric["requestRate"]["properties"]["targetValue"]["default"], 100);
    assert_eq!(metric["requestRate"]["properties"]["window"]["default"], "1m");
    assert_eq!(
        metric["requestRate"]["properties"]["granularity"]["default"],
        "1s"
    );
    let conditions = &s["properties"]["status"]["properties"]["conditions"];
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    assert!(conditions["items"]["properties"]["lastTransitionTime"].is_object());

    let ir = by_name("interceptorroutes.http.keda.sh");
    assert_eq!(ir.spec.versions[0].name, "v1beta1");
    assert!(
        ir.spec.versions[0]
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let cols: Vec<String> = columns(ir).into_iter().map(|c| c.0).collect();
    assert_eq!(cols, ["TargetService", "Ready", "Age"]);
    let s = schema_json(ir);
    let spec = &s["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["scalingMetric", "target"]));
    assert_eq!(
        spec["properties"]["target"]["x-kubernetes-validations"][0]["rule"],
        "has(self.port) != has(self.portName)"
    );
    assert_eq!(
        spec["properties"]["target"]["properties"]["port"]["maximum"],
        65535.0
    );
    assert_eq!(
        spec["properties"]["scalingMetric"]["x-kubernetes-validations"][0]["rule"],
        "has(self.concurrency) || has(self.requestRate)"
    );
    // Since the add-on's 0.15 a placeholder or a pending cap alone is a cold start.
    assert_eq!(
        spec["properties"]["coldStart"]["x-kubernetes-validations"][0]["rule"],
        "has(self.fallback) || has(self.placeholder) || has(self.maxPendingRequests)"
    );
    assert_eq!(
        spec["properties"]["coldStart"]["properties"]["overflow"]["enum"],
        serde_json::json!(["Reject", "Placeholder"])
    );
    let statics = &spec["properties"]["staticRoutes"]["items"]["properties"];
    assert_eq!(statics["response"]["properties"]["body"]["maxLength"], 32768);
    assert_eq!(statics["responseMode"]["default"], "WhenUnavailable");
    assert_eq!(spec["properties"]["proxyMode"]["default"], "Service");
    let rule = &spec["properties"]["rules"]["items"]["properties"];
    assert_eq!(rule["hosts"]["x-kubernetes-list-type"], "set");
    assert_eq!(rule["paths"]["x-kubernetes-list-type"], "atomic");
    assert_eq!(rule["headers"]["x-kubernetes-list-type"], "map");
}

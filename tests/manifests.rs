//! Every shipped manifest parses into its typed Kubernetes object.

use k8s_openapi::{
    api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    kube_aggregator::pkg::apis::apiregistration::v1::APIService,
};
use serde::Deserialize;

fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn check(kind: &str, doc: serde_yaml::Value) {
    let r = match kind {
        "APIService" => serde_yaml::from_value::<APIService>(doc).map(|_| ()),
        "ClusterRole" => serde_yaml::from_value::<ClusterRole>(doc).map(|_| ()),
        "ClusterRoleBinding" => serde_yaml::from_value::<ClusterRoleBinding>(doc).map(|_| ()),
        "Role" => serde_yaml::from_value::<Role>(doc).map(|_| ()),
        "RoleBinding" => serde_yaml::from_value::<RoleBinding>(doc).map(|_| ()),
        "ScaledObject" => serde_yaml::from_value::<ebb::crd::ScaledObject>(doc).map(|_| ()),
        other => panic!("no typed check for kind {other}"),
    };
    r.unwrap_or_else(|e| panic!("{kind}: {e}"));
}

#[test]
fn manifests_and_examples_parse_into_typed_objects() {
    let mut seen = 0;
    for dir in ["manifests", "examples/local"] {
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for doc in documents(&text) {
                let kind = doc["kind"].as_str().expect("kind").to_string();
                check(&kind, doc);
                seen += 1;
            }
        }
    }
    assert!(seen >= 9, "only {seen} documents checked");
    let svc: APIService =
        serde_yaml::from_str(&std::fs::read_to_string("manifests/apiservice.yaml").expect("read"))
            .expect("parse");
    assert_eq!(
        svc.metadata.name.as_deref(),
        Some("v1beta1.external.metrics.k8s.io")
    );
}

//! `ebb check` and `ebb render` as a user runs them: exit codes and one line per problem.

use std::{path::Path, process::Command};

fn ebb(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .env_remove("EBB_LOG_LEVEL")
        .output()
        .expect("ebb runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write fixture");
    path.to_string_lossy().into_owned()
}

const GOOD: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: good, namespace: apps}
spec:
  scaleTargetRef: {name: web}
  minReplicaCount: 1
  triggers:
  - type: cron
    metadata: {timezone: Etc/UTC, start: 0 8 * * *, end: 0 18 * * *, desiredReplicas: "5"}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: ta, namespace: apps}
spec:
  secretTargetRef:
  - {parameter: token, name: s, key: k}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: apps}
stringData: {k: v}
"#;

const BAD: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: bad}
spec:
  scaleTargetRef: {name: web}
  minReplicaCount: 5
  maxReplicaCount: 2
  triggers:
  - type: cron
    name: dup
    metadata: {timezone: Etc/UTC, end: 0 18 * * *, desiredReplicas: "5"}
  - type: nosuch
    name: dup
    metadata: {}
---
apiVersion: keda.sh/v1alpha1
kind: ClusterTriggerAuthentication
metadata: {name: cta}
spec:
  podIdentity: {provider: aws, roleArn: arn, identityOwner: workload}
"#;

#[test]
fn clean_files_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "good.yaml", GOOD);
    let (code, out, err) = ebb(&["check", "-f", &good]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert_eq!(out.trim(), "ok: 2 objects");
}

#[test]
fn shipped_fixtures_pass() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keda");
    let (code, out, err) = ebb(&["check", "-f", dir]);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(out.starts_with("ok: "), "{out}");
}

#[test]
fn problems_are_listed_one_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "good.yaml", GOOD);
    let bad = write(dir.path(), "bad.yaml", BAD);
    let (code, out, _) = ebb(&["check", "-f", &good, &bad]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    let so = format!("{bad}: ScaledObject default/bad: ");
    assert_eq!(
        lines,
        vec![
            format!("{so}spec.minReplicaCount: MinReplicaCount=5 must be less than MaxReplicaCount=2"),
            format!(
                "{so}spec.triggers[1].name: triggerName \"dup\" is defined multiple times in the ScaledObject/ScaledJob, but it must be unique"
            ),
            format!(
                "{so}spec.triggers[0].metadata.start: error parsing cron metadata: missing required parameter \"start\" in [triggerMetadata]"
            ),
            format!("{so}spec.triggers[1].type: no scaler found for type: nosuch"),
            format!(
                "{bad}: ClusterTriggerAuthentication cta: spec.podIdentity.roleArn: roleArn of PodIdentity can't be set if KEDA isn't identityOwner"
            ),
        ]
    );
}

#[test]
fn unreadable_and_malformed_files_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = write(
        dir.path(),
        "broken.yaml",
        "kind: ScaledObject\napiVersion: keda.sh/v1alpha1\nspec: [\n",
    );
    let (code, out, _) = ebb(&["check", "-f", &broken]);
    assert_eq!(code, 1);
    assert!(out.starts_with(&broken), "{out}");
    let missing = dir.path().join("missing.yaml");
    let (code, _, _) = ebb(&["check", "-f", &missing.to_string_lossy()]);
    assert_eq!(code, 1);
}

#[test]
fn render_prints_hpas_and_reports_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "good.yaml", GOOD);
    let (code, out, err) = ebb(&["render", "-f", &good, "--version-label", "main"]);
    assert_eq!(code, 0, "{err}");
    let hpa: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler =
        serde_yaml::from_str(&out).expect("one HPA document");
    assert_eq!(hpa.metadata.name.as_deref(), Some("keda-hpa-good"));
    assert_eq!(hpa.metadata.namespace.as_deref(), Some("apps"));

    let bad = write(dir.path(), "bad.yaml", BAD);
    let (code, out, err) = ebb(&["render", "-f", &good, &bad]);
    assert_eq!(code, 1);
    assert_eq!(out.matches("kind: HorizontalPodAutoscaler").count(), 1, "{out}");
    assert!(
        err.contains(&format!(
            "{bad}: ScaledObject default/bad: spec.triggers[1]: no scaler found for type: nosuch"
        )),
        "{err}"
    );

    // Several objects become a multi-document stream.
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keda");
    let (code, out, err) = ebb(&[
        "render",
        "-f",
        &format!("{fixtures}/cron.so.yaml"),
        &format!("{fixtures}/cpu.so.yaml"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("\n---\n").count(), 1, "{out}");
}

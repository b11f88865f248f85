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
    let (code, out, err) = ebb(&["check", "--allow-other-kinds", "-f", dir]);
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
            format!(
                "{so}spec.triggers[1].type: {}",
                ebb::scalers::unknown_type_message("nosuch")
            ),
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
            "{bad}: ScaledObject default/bad: spec.triggers[1].type: unknown trigger type `nosuch`"
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

fn check_text(text: &str, extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "so.yaml", text);
    let mut args = vec!["check", "-f", &file];
    args.extend_from_slice(extra);
    let (code, out, err) = ebb(&args);
    (code, format!("{out}{err}").replace(&file, "FILE"))
}

const MEMORY_DEPRECATED_TYPE: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: mem, namespace: apps}
spec:
  scaleTargetRef: {name: web}
  minReplicaCount: 1
  triggers:
  - type: memory
    metadata: {type: Utilization, value: "60"}
"#;

/// Item 2: a KEDA 2.14–2.17 manifest passes, with the deprecation said out loud.
#[test]
fn deprecated_cpu_memory_type_is_accepted_with_a_warning() {
    let (code, out) = check_text(MEMORY_DEPRECATED_TYPE, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "FILE: ScaledObject apps/mem: spec.triggers[0].metadata.type: warning: The 'type' setting is DEPRECATED and will be removed in v2.18 - Use 'metricType' instead.",
            "ok: 1 objects",
        ]
    );
    // `ebb render` gives the Utilization target and says the same on stderr.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "so.yaml", MEMORY_DEPRECATED_TYPE);
    let (code, out, err) = ebb(&["render", "-f", &file]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("averageUtilization: 60"), "{out}");
    assert!(err.contains("warning: The 'type' setting is DEPRECATED"), "{err}");
    // Both keys, disagreeing: refused.
    let both = MEMORY_DEPRECATED_TYPE.replace(
        "- type: memory\n",
        "- type: memory\n    metricType: AverageValue\n",
    );
    let (code, out) = check_text(&both, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "spec.triggers[0].metadata.type: metadata.type Utilization and metricType AverageValue disagree"
        ),
        "{out}"
    );
}

/// Item 5: a KEDA scaler ebb lacks and a typo read differently.
#[test]
fn unknown_trigger_types_are_explained() {
    let so = |ty: &str| {
        format!(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: x, namespace: apps}}\nspec:\n  scaleTargetRef: {{name: web}}\n  triggers:\n  - type: {ty}\n    metadata: {{}}\n"
        )
    };
    let (code, out) = check_text(&so("kafka"), &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("spec.triggers[0].type: KEDA scaler `kafka` is not supported by ebb yet (supported: cron, metrics-api, prometheus, "),
        "{out}"
    );
    let (code, out) = check_text(&so("metrics-apii"), &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "spec.triggers[0].type: unknown trigger type `metrics-apii`; did you mean `metrics-api`?"
        ),
        "{out}"
    );
}

/// Item 6: a CI gate must fail on what it cannot check.
#[test]
fn unknown_kinds_old_groups_and_empty_files_fail() {
    let (code, out) = check_text(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObjet\nmetadata: {name: x}\nspec: {}\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("FILE: ScaledObjet default/x: kind: unknown kind `ScaledObjet` in keda.sh/v1alpha1; did you mean `ScaledObject`?"),
        "{out}"
    );
    let (code, out) = check_text(
        "apiVersion: keda.k8s.io/v1alpha1\nkind: ScaledObject\nmetadata: {name: x}\nspec: {scaleTargetRef: {deploymentName: web}}\n",
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("apiVersion: keda.k8s.io/v1alpha1 is the API group of KEDA 1.x"),
        "{out}"
    );
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n";
    let (code, out) = check_text(deployment, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("FILE: no ScaledObject, ScaledJob, TriggerAuthentication or ClusterTriggerAuthentication to check (found: Deployment default/web)"),
        "{out}"
    );
    // The flag accepts such files, but checking nothing at all still fails.
    let (code, out) = check_text(deployment, &["--allow-other-kinds"]);
    assert_eq!(code, 1, "{out}");
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "good.yaml", GOOD);
    let other = write(dir.path(), "deploy.yaml", deployment);
    let (code, out, _) = ebb(&["check", "-f", &good, &other, "--allow-other-kinds"]);
    assert_eq!((code, out.trim()), (0, "ok: 2 objects"));
    let (code, _, _) = ebb(&["check", "-f", &good, &other]);
    assert_eq!(code, 1);
}

/// Item 7: an unknown IANA zone is refused when the trigger is parsed.
#[test]
fn unknown_cron_timezone_fails() {
    let (code, out) = check_text(&GOOD.replace("Etc/UTC", "Europe/Berln"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FILE: ScaledObject apps/good: spec.triggers[0].metadata.timezone: error parsing cron metadata: unable to load timezone. Error: unknown time zone Europe/Berln"),
        "{out}"
    );
}

/// Item 3: KEDA never reads queueURL from a TriggerAuthentication.
#[test]
fn sqs_without_queue_url_is_refused_despite_an_authentication_ref() {
    let so = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: q, namespace: apps}\nspec:\n  scaleTargetRef: {name: web}\n  triggers:\n  - type: aws-sqs-queue\n    authenticationRef: {name: aws}\n    metadata: {queueLength: '5', awsRegion: eu-west-1}\n";
    let (code, out) = check_text(so, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("spec.triggers[0].metadata.queueURL: missing required parameter \"queueURL\" in [triggerMetadata resolvedEnv]"),
        "{out}"
    );
}

const PROMETHEUS_BEARER: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: prom, namespace: apps}
spec:
  scaleTargetRef: {name: web}
  triggers:
  - type: prometheus
    authenticationRef: {name: prom-auth}
    metadata: {serverAddress: "http://prometheus:9090", query: up, threshold: "1", authModes: bearer}
"#;

const PROM_AUTH: &str = r#"
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: prom-auth, namespace: apps}
spec:
  secretTargetRef:
  - {parameter: bearerToken, name: prom-secret, key: token}
"#;

/// Item 18: TriggerAuthentications and Secrets in the files are resolved as the operator would.
#[test]
fn references_in_the_files_are_resolved_as_the_operator_would() {
    let secret = |data: &str| {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: prom-secret, namespace: apps}}\nstringData: {{{data}}}\n"
        )
    };
    // Everything there: clean.
    let (code, out) = check_text(
        &format!("{PROMETHEUS_BEARER}{PROM_AUTH}{}", secret("token: t0k")),
        &[],
    );
    assert_eq!((code, out.trim()), (0, "ok: 2 objects"), "{out}");
    // The Secret lacks the key the TriggerAuthentication maps to bearerToken.
    let (code, out) = check_text(
        &format!("{PROMETHEUS_BEARER}{PROM_AUTH}{}", secret("other: x")),
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FILE: ScaledObject apps/prom: spec.triggers[0].authenticationRef: key \"token\" not found in Secret apps/prom-secret (TriggerAuthentication apps/prom-auth, parameter bearerToken)"),
        "{out}"
    );
    // The TriggerAuthentication gives no bearerToken at all: the scaler refuses, as in the cluster.
    let no_bearer = PROM_AUTH.replace("parameter: bearerToken", "parameter: username");
    let (code, out) = check_text(
        &format!("{PROMETHEUS_BEARER}{no_bearer}{}", secret("token: t")),
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bearerToken is required"), "{out}");
    // A reference to a TriggerAuthentication the files do not define, while they define others.
    let (code, out) = check_text(
        &format!(
            "{}{PROM_AUTH}{}",
            PROMETHEUS_BEARER.replace("name: prom-auth}", "name: prom-auht}"),
            secret("token: t")
        ),
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("spec.triggers[0].authenticationRef: TriggerAuthentication apps/prom-auht not found"),
        "{out}"
    );
    // Nothing of the kind in the files: said to be unchecked, not wrong.
    let (code, out) = check_text(PROMETHEUS_BEARER, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "FILE: ScaledObject apps/prom: spec.triggers[0].authenticationRef: not checked: TriggerAuthentication apps/prom-auth is not in the given files",
            "ok: 1 objects",
        ]
    );
    let (code, out) = check_text(&format!("{PROMETHEUS_BEARER}{PROM_AUTH}"), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("not checked: Secret apps/prom-secret is not in the given files"),
        "{out}"
    );
}

const SCALED_JOB: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: encode, namespace: media, labels: {team: video}}
spec:
  jobTargetRef:
    template:
      spec:
        containers:
        - name: worker
          image: encoder:1
          env: [{name: QUEUE_URL, value: "http://sqs.local/123/jobs"}]
  maxReplicaCount: 5
  triggers:
  - type: aws-sqs-queue
    metadata: {queueURLFromEnv: QUEUE_URL, queueLength: "1", awsRegion: eu-west-1, identityOwner: operator}
"#;

/// ScaledJobs are checked and rendered like ScaledObjects (issue 12).
#[test]
fn scaled_jobs_are_checked_and_rendered() {
    let (code, out) = check_text(SCALED_JOB, &[]);
    assert_eq!((code, out.trim()), (0, "ok: 1 objects"), "{out}");
    let bad = SCALED_JOB
        .replace(
            "maxReplicaCount: 5",
            "maxReplicaCount: 0\n  rollout: {strategy: default}",
        )
        .replace("name: worker\n", "name: worker\n          command: [run]\n")
        .replace("queueLength: \"1\"", "queueLength: \"many\"");
    let (code, out) = check_text(&bad, &[]);
    assert_eq!(code, 1, "{out}");
    for wanted in [
        "FILE: ScaledJob media/encode: spec.maxReplicaCount: spec.maxReplicaCount: Invalid value: 0",
        "FILE: ScaledJob media/encode: spec.rollout.strategy: spec.rollout.strategy: Unsupported value: \"default\"",
        "FILE: ScaledJob media/encode: spec.triggers[0].metadata.queueLength:",
    ] {
        assert!(out.contains(wanted), "no {wanted:?} in\n{out}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "sj.yaml", SCALED_JOB);
    let (code, out, err) = ebb(&["render", "-f", &file]);
    assert_eq!(code, 0, "{err}");
    let job: serde_json::Value = serde_yaml::from_str(&out).expect("one Job");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["metadata"]["generateName"], "encode-");
    assert_eq!(job["metadata"]["namespace"], "media");
    assert_eq!(job["metadata"]["labels"]["scaledjob.keda.sh/name"], "encode");
    assert_eq!(job["metadata"]["labels"]["team"], "video");
    assert_eq!(
        job["metadata"]["annotations"]["scaledjob.keda.sh/generation"],
        "1"
    );
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "http://sqs.local/123/jobs"
    );
    let broken = write(
        dir.path(),
        "broken.yaml",
        &SCALED_JOB.replace("envSourceContainerName", "x").replace(
            "  jobTargetRef:",
            "  envSourceContainerName: nope\n  jobTargetRef:",
        ),
    );
    let (code, _, err) = ebb(&["render", "-f", &broken]);
    assert_eq!(code, 1);
    assert!(err.contains("couldn't find container with name nope"), "{err}");
}

//! AWS scalers and credential resolution through the real AWS SDK against a local moto server.
//!
//! Every test shares one moto server (started by `scripts/moto`, killed after the last test) and
//! uses its own queue names or region, so tests can run in parallel on moto's shared state.

mod common;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use aws_sdk_cloudwatch::{
    primitives::DateTime,
    types::{Dimension, MetricDatum},
};
use common::moto::{Moto, Proxy};
use ebb::{
    crd::trigger_authentication::AuthPodIdentity,
    scalers::{
        MetricsAndActivity, Scaler, ScalerConfig, ScalerContext, ScalerError,
        aws::{
            AwsOptions, AwsShared,
            cloudwatch::{CloudWatchScaler, query_window},
        },
        build_scaler,
    },
};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

fn testing_credentials() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new("testing", "testing", None, None, "test"))
}

/// An `AwsShared` whose default chain is the moto test keys.
fn aws_with(web_identity_token_file: Option<std::path::PathBuf>) -> AwsShared {
    AwsShared::new(AwsOptions {
        web_identity_token_file,
        default_credentials: Some(testing_credentials()),
        default_endpoint: None,
    })
}

fn ctx(aws: &AwsShared) -> ScalerContext {
    ScalerContext {
        aws: aws.clone(),
        ..Default::default()
    }
}

fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn trigger(kind: &str, meta: &[(&str, &str)], auth: &[(&str, &str)]) -> ScalerConfig {
    ScalerConfig {
        namespace: "default".into(),
        scaled_object: "so".into(),
        trigger_index: 0,
        trigger_type: kind.into(),
        metadata: kv(meta),
        auth_params: kv(auth),
        global_http_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

const STATIC_KEYS: &[(&str, &str)] = &[("awsAccessKeyID", "testing"), ("awsSecretAccessKey", "testing")];

/// An SDK config for setting up moto state, built by ebb's own shared setup (static test keys).
async fn sdk(moto: &Moto, region: &str) -> aws_types::SdkConfig {
    aws_with(None)
        .sdk_config(&trigger("setup", &[], STATIC_KEYS), region, Some(&moto.url))
        .await
        .expect("sdk config")
}

async fn create_queue(moto: &Moto, name: &str) -> String {
    let sqs = aws_sdk_sqs::Client::new(&sdk(moto, REGION).await);
    sqs.create_queue()
        .queue_name(name)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "600")
        .send()
        .await
        .expect("create queue");
    format!("{}/{ACCOUNT}/{name}", moto.url)
}

async fn read(config: &ScalerConfig, aws: &AwsShared) -> Result<MetricsAndActivity, ScalerError> {
    read_from(&*build_scaler(config, &ctx(aws)).expect("scaler builds")).await
}

/// A CloudWatch read whose query window is computed for `now`, the moment the test's data
/// points were placed around: a minute boundary passing between the two moves nothing.
async fn read_cloudwatch_at(
    config: &ScalerConfig,
    aws: &AwsShared,
    now: SystemTime,
) -> Result<MetricsAndActivity, ScalerError> {
    let scaler = CloudWatchScaler::new(config, &ctx(aws))
        .expect("scaler builds")
        .with_clock(Arc::new(move || now));
    read_from(&scaler).await
}

async fn read_from(scaler: &dyn Scaler) -> Result<MetricsAndActivity, ScalerError> {
    let specs = scaler.metric_specs();
    let name = match specs.first() {
        Some(ebb::scalers::MetricSpec::External { name, .. }) => name.clone(),
        other => panic!("unexpected spec {other:?}"),
    };
    scaler.get_metrics_and_activity(&name).await
}

#[tokio::test]
async fn sqs_counts_visible_in_flight_and_delayed() {
    let moto = Moto::shared();
    let url = create_queue(&moto, "ebb-counts").await;
    let sqs = aws_sdk_sqs::Client::new(&sdk(&moto, REGION).await);
    // 2 in flight: received, not deleted, hidden for the queue's 600 s visibility timeout.
    for i in 0..2 {
        sqs.send_message()
            .queue_url(&url)
            .message_body(format!("f{i}"))
            .send()
            .await
            .expect("send");
    }
    let got = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive");
    assert_eq!(got.messages().len(), 2);
    // 3 visible, 4 delayed.
    for i in 0..3 {
        sqs.send_message()
            .queue_url(&url)
            .message_body(format!("v{i}"))
            .send()
            .await
            .expect("send");
    }
    for i in 0..4 {
        sqs.send_message()
            .queue_url(&url)
            .message_body(format!("d{i}"))
            .delay_seconds(900)
            .send()
            .await
            .expect("send delayed");
    }

    let aws = aws_with(None);
    let cases = [
        (None, None, 5.0),
        (Some("false"), None, 3.0),
        (None, Some("true"), 9.0),
        (Some("false"), Some("true"), 7.0),
        (Some("true"), Some("false"), 5.0),
    ];
    for (in_flight, delayed, want) in cases {
        let mut meta = vec![
            ("queueURL", url.as_str()),
            ("awsRegion", REGION),
            ("awsEndpoint", moto.url.as_str()),
            ("activationQueueLength", "5"),
        ];
        if let Some(v) = in_flight {
            meta.push(("scaleOnInFlight", v));
        }
        if let Some(v) = delayed {
            meta.push(("scaleOnDelayed", v));
        }
        let got = read(&trigger("aws-sqs-queue", &meta, STATIC_KEYS), &aws)
            .await
            .unwrap_or_else(|e| panic!("{in_flight:?}/{delayed:?}: {e}"));
        assert_eq!(got.values, vec![want], "{in_flight:?}/{delayed:?}");
        assert_eq!(got.active, want > 5.0, "{in_flight:?}/{delayed:?}");
    }
    // All these triggers share one SDK config (same keys, region, endpoint).
    assert_eq!(aws.cached_configs().await, 1);
}

#[tokio::test]
async fn sqs_missing_queue_is_a_clear_error() {
    let moto = Moto::shared();
    let aws = aws_with(None);
    let url = format!("{}/{ACCOUNT}/ebb-no-such-queue", moto.url);
    let config = trigger(
        "aws-sqs-queue",
        &[
            ("queueURL", &url),
            ("awsRegion", REGION),
            ("awsEndpoint", &moto.url),
        ],
        STATIC_KEYS,
    );
    let err = read(&config, &aws).await.expect_err("missing queue fails");
    let msg = err.to_string();
    assert!(matches!(err, ScalerError::Upstream(_)), "{err:?}");
    assert!(msg.contains("aws-sqs-queue trigger 0"), "{msg}");
    assert!(msg.contains("GetQueueAttributes"), "{msg}");
    assert!(
        msg.contains("NonExistentQueue") || msg.contains("does not exist"),
        "{msg}"
    );
}

#[tokio::test]
async fn sqs_static_keys_sign_the_call() {
    let moto = Moto::shared();
    let proxy = Proxy::start(&moto.url).await;
    let url = create_queue(&moto, "ebb-static").await;
    let aws = aws_with(None);
    let config = trigger(
        "aws-sqs-queue",
        &[
            ("queueURL", &url),
            ("awsRegion", REGION),
            ("awsEndpoint", &proxy.url),
        ],
        &[("awsAccessKeyId", "AKIASTATIC"), ("awsSecretAccessKey", "s")],
    );
    let got = read(&config, &aws).await.expect("read");
    assert_eq!(got.values, vec![0.0]);
    assert!(!got.active);
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].action, "GetQueueAttributes");
    assert_eq!(seen[0].access_key_id, "AKIASTATIC");
}

#[tokio::test]
async fn assumed_role_signs_sqs_and_is_fetched_once() {
    let moto = Moto::shared();
    let proxy = Proxy::start(&moto.url).await;
    let url = create_queue(&moto, "ebb-assume").await;
    let aws = aws_with(None);
    let role = format!("arn:aws:iam::{ACCOUNT}:role/ebb-reader");
    let config = trigger(
        "aws-sqs-queue",
        &[
            ("queueURL", &url),
            ("awsRegion", REGION),
            ("awsEndpoint", &proxy.url),
        ],
        &[("awsRoleArn", &role)],
    );
    // Two scalers (two triggers on the same queue) and 20 reads each: one AssumeRole in total.
    for _ in 0..2 {
        let scaler = build_scaler(&config, &ctx(&aws)).expect("build");
        for _ in 0..20 {
            scaler
                .get_metrics_and_activity("s0-aws-sqs-ebb-assume")
                .await
                .expect("read");
        }
    }
    assert_eq!(proxy.count("AssumeRole"), 1, "{:?}", proxy.seen());
    assert_eq!(proxy.count("GetQueueAttributes"), 40);
    let creds = aws.credentials(&config, REGION).await.expect("credentials");
    assert_eq!(proxy.count("AssumeRole"), 1, "credentials() reuses the cache");
    assert_ne!(creds.access_key_id(), "testing");
    assert!(creds.expiry().is_some());
    // The STS call itself was signed with the default chain; the SQS calls with the assumed key.
    for s in proxy.seen() {
        match s.action.as_str() {
            "AssumeRole" => assert_eq!(s.access_key_id, "testing"),
            _ => assert_eq!(s.access_key_id, creds.access_key_id(), "{s:?}"),
        }
    }
}

fn pod_identity(role: Option<&str>, owner: Option<&str>, external_id: Option<&str>) -> AuthPodIdentity {
    AuthPodIdentity {
        provider: "aws".into(),
        role_arn: role.map(str::to_string),
        identity_owner: owner.map(str::to_string),
        external_id: external_id.map(str::to_string),
        ..Default::default()
    }
}

#[tokio::test]
async fn pod_identity_role_uses_web_identity_first() {
    let moto = Moto::shared();
    let proxy = Proxy::start(&moto.url).await;
    let url = create_queue(&moto, "ebb-irsa").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n").expect("write token");
    let aws = aws_with(Some(token));
    let role = format!("arn:aws:iam::{ACCOUNT}:role/ebb-irsa");
    let mut config = trigger(
        "aws-sqs-queue",
        &[
            ("queueURL", &url),
            ("awsRegion", REGION),
            ("awsEndpoint", &proxy.url),
        ],
        &[],
    );
    config.pod_identity = Some(pod_identity(Some(&role), None, None));
    for _ in 0..3 {
        read(&config, &aws).await.expect("read");
    }
    assert_eq!(proxy.count("AssumeRoleWithWebIdentity"), 1, "{:?}", proxy.seen());
    assert_eq!(proxy.count("AssumeRole"), 0);
    let creds = aws.credentials(&config, REGION).await.expect("credentials");
    let web = proxy
        .seen()
        .into_iter()
        .find(|s| s.action == "AssumeRoleWithWebIdentity")
        .expect("web identity call");
    assert_eq!(web.access_key_id, "", "AssumeRoleWithWebIdentity is unsigned");
    for s in proxy.seen().iter().filter(|s| s.action == "GetQueueAttributes") {
        assert_eq!(s.access_key_id, creds.access_key_id());
    }
}

#[tokio::test]
async fn pod_identity_falls_back_to_assume_role_and_workload_role() {
    let moto = Moto::shared();
    let proxy = Proxy::start(&moto.url).await;
    let url = create_queue(&moto, "ebb-fallback").await;
    // The token file does not exist: web identity fails, AssumeRole (with externalID) is used.
    let dir = tempfile::tempdir().expect("tempdir");
    let aws = aws_with(Some(dir.path().join("missing-token")));
    let meta = [
        ("queueURL", url.as_str()),
        ("awsRegion", REGION),
        ("awsEndpoint", proxy.url.as_str()),
    ];
    let mut config = trigger("aws-sqs-queue", &meta, &[]);
    let role = format!("arn:aws:iam::{ACCOUNT}:role/ebb-fallback");
    config.pod_identity = Some(pod_identity(Some(&role), Some("keda"), Some("ext-1")));
    read(&config, &aws).await.expect("read");
    assert_eq!(proxy.count("AssumeRole"), 1, "{:?}", proxy.seen());

    // identityOwner: workload assumes the service account's role.
    let mut workload = trigger("aws-sqs-queue", &meta, &[]);
    workload.pod_identity = Some(pod_identity(None, Some("workload"), None));
    workload.workload_role_arn = Some(format!("arn:aws:iam::{ACCOUNT}:role/ebb-workload"));
    read(&workload, &aws).await.expect("read");
    assert_eq!(proxy.count("AssumeRole"), 2);
    // Without the annotation it is a config error, before any call.
    workload.workload_role_arn = None;
    let err = build_scaler(&workload, &ctx(&aws)).expect_err("no annotation");
    assert!(
        err.to_string()
            .contains("eks.amazonaws.com/role-arn annotation not found"),
        "{err}"
    );
    assert_eq!(proxy.count("AssumeRole"), 2);
}

async fn put_metric(
    moto: &Moto,
    region: &str,
    namespace: &str,
    dims: &[(&str, &str)],
    points: &[(i64, f64)],
) {
    let cw = aws_sdk_cloudwatch::Client::new(&sdk(moto, region).await);
    let mut req = cw.put_metric_data().namespace(namespace);
    for (ts, value) in points {
        let mut datum = MetricDatum::builder()
            .metric_name("Jobs")
            .timestamp(DateTime::from_secs(*ts))
            .value(*value);
        for (n, v) in dims {
            datum = datum.dimensions(Dimension::builder().name(*n).value(*v).build());
        }
        req = req.metric_data(datum.build());
    }
    req.send().await.expect("put metric data");
}

/// The query window (60 s periods over 300 s) of a read at `now`.
fn window_at(now: SystemTime) -> (i64, i64) {
    query_window(now, 0, 60, 300)
}

#[tokio::test]
async fn cloudwatch_metric_stat_with_dimensions_newest_first() {
    let moto = Moto::shared();
    let region = "us-west-2";
    let now = SystemTime::now();
    let (_, end) = window_at(now);
    // Two periods inside the window; the newest (end − 30 s) must win with TimestampDescending.
    put_metric(
        &moto,
        region,
        "ebb/test",
        &[("QueueName", "jobs")],
        &[(end - 90, 3.0), (end - 30, 7.0)],
    )
    .await;
    put_metric(
        &moto,
        region,
        "ebb/test",
        &[("QueueName", "other")],
        &[(end - 30, 100.0)],
    )
    .await;
    let aws = aws_with(None);
    let config = trigger(
        "aws-cloudwatch",
        &[
            ("namespace", "ebb/test"),
            ("metricName", "Jobs"),
            ("dimensionName", "QueueName"),
            ("dimensionValue", "jobs"),
            ("metricStat", "Maximum"),
            ("metricStatPeriod", "60"),
            ("metricCollectionTime", "300"),
            ("targetMetricValue", "2"),
            ("activationTargetMetricValue", "5"),
            ("minMetricValue", "0"),
            ("awsRegion", region),
            ("awsEndpoint", &moto.url),
        ],
        STATIC_KEYS,
    );
    let got = read_cloudwatch_at(&config, &aws, now).await.expect("read");
    assert_eq!(got.values, vec![7.0]);
    assert!(got.active);
}

#[tokio::test]
async fn cloudwatch_expression_and_min_value() {
    let moto = Moto::shared();
    // A region of its own: moto's Metrics Insights support sums every datapoint of the period in
    // the region, ignoring the query's FROM/WHERE (it does not evaluate the expression).
    let region = "eu-central-1";
    let now = SystemTime::now();
    let (_, end) = window_at(now);
    put_metric(&moto, region, "ebb/expr", &[("Q", "a")], &[(end - 30, 2.0)]).await;
    put_metric(&moto, region, "ebb/expr", &[("Q", "b")], &[(end - 30, 5.0)]).await;
    let aws = aws_with(None);
    let base = [
        ("metricStatPeriod", "60"),
        ("targetMetricValue", "10"),
        ("minMetricValue", "1.5"),
        ("activationTargetMetricValue", "2"),
        ("awsEndpoint", moto.url.as_str()),
    ];
    let mut meta = base.to_vec();
    meta.extend([
        ("expression", "SELECT SUM(Jobs) FROM \"ebb/expr\""),
        ("awsRegion", region),
    ]);
    let got = read_cloudwatch_at(&trigger("aws-cloudwatch", &meta, STATIC_KEYS), &aws, now)
        .await
        .expect("read");
    assert_eq!(got.values, vec![7.0], "moto sums both series of the period");
    assert!(got.active);

    // No datapoints at all in a fresh region: minMetricValue, inactive.
    let mut meta = base.to_vec();
    meta.extend([
        ("namespace", "ebb/none"),
        ("metricName", "Nothing"),
        ("awsRegion", "ap-northeast-1"),
    ]);
    let got = read_cloudwatch_at(&trigger("aws-cloudwatch", &meta, STATIC_KEYS), &aws, now)
        .await
        .expect("read");
    assert_eq!(got.values, vec![1.5]);
    assert!(!got.active);
    // moto answers with one result with no values: ignoreNullValues=false makes that an error.
    meta.push(("ignoreNullValues", "false"));
    let err = read_cloudwatch_at(&trigger("aws-cloudwatch", &meta, STATIC_KEYS), &aws, now)
        .await
        .expect_err("empty values");
    assert!(err.to_string().contains("ignoreNullValues is false"), "{err}");
}

#[tokio::test]
async fn cloudwatch_and_sqs_share_assumed_credentials() {
    let moto = Moto::shared();
    let proxy = Proxy::start(&moto.url).await;
    let url = create_queue(&moto, "ebb-shared").await;
    let aws = aws_with(None);
    let role = [("awsRoleArn", "arn:aws:iam::123456789012:role/ebb-shared")];
    let sqs = trigger(
        "aws-sqs-queue",
        &[
            ("queueURL", &url),
            ("awsRegion", REGION),
            ("awsEndpoint", &proxy.url),
        ],
        &role,
    );
    let cw = trigger(
        "aws-cloudwatch",
        &[
            ("namespace", "ebb/shared"),
            ("metricName", "Jobs"),
            ("targetMetricValue", "1"),
            ("minMetricValue", "0"),
            ("awsRegion", REGION),
            ("awsEndpoint", &proxy.url),
        ],
        &role,
    );
    for _ in 0..5 {
        read(&sqs, &aws).await.expect("sqs");
        read(&cw, &aws).await.expect("cloudwatch");
    }
    assert_eq!(proxy.count("AssumeRole"), 1, "{:?}", proxy.seen());
    assert_eq!(proxy.count("GetMetricData"), 5);
}

#[tokio::test]
async fn silent_endpoint_is_a_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let aws = aws_with(None);
    let mut config = trigger(
        "aws-sqs-queue",
        &[
            ("queueURL", &format!("{endpoint}/{ACCOUNT}/q")),
            ("awsRegion", REGION),
            ("awsEndpoint", &endpoint),
        ],
        STATIC_KEYS,
    );
    config.global_http_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = read(&config, &aws).await.expect_err("times out");
    assert!(
        matches!(&err, ScalerError::UpstreamTimeout { after, .. } if *after == Duration::from_millis(300)),
        "{err:?}"
    );
    // The message names the trigger, the call and the endpoint that never answered.
    assert_eq!(
        err.to_string(),
        format!("aws-sqs-queue trigger 0: GetQueueAttributes on {endpoint}: timed out after 300ms")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
}

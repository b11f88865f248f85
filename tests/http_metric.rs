//! The `external-push` trigger read natively: the counts of two real loopback servers that
//! answer the activator's admin `/queue` JSON are summed, a replica that stops answering keeps
//! its last concurrency, a held request makes the object active, and the rate counts only
//! requests seen between reads.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use ebb::{
    crd::http_scaled_object::HTTPScaledObject,
    scalers::{
        ScalerConfig, ScalerContext, build_scaler,
        http_push::{ActivatorDiscovery, HttpIndex, HttpShared},
    },
};

mod common;
use common::activator_admin::admin_server;

fn queue(concurrency: u64, count: u64) -> Option<String> {
    Some(format!(
        r#"{{"default/hello": {{"Concurrency": {concurrency}, "RequestCount": {count}}}, "default/other": {{"Concurrency": 7, "RequestCount": 70}}}}"#
    ))
}

fn config(metadata: &[(&str, &str)]) -> ScalerConfig {
    ScalerConfig {
        namespace: "default".into(),
        scaled_object: "hello".into(),
        trigger_index: 0,
        trigger_type: "external-push".into(),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..ScalerConfig::default()
    }
}

fn index(spec: &str) -> HttpIndex {
    let so: HTTPScaledObject = serde_yaml::from_str(&format!(
        "apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\nmetadata: {{name: hello, namespace: default}}\nspec: {spec}\n"
    ))
    .expect("yaml");
    let index = HttpIndex::default();
    index.apply_http_scaled_object(&so);
    index
}

#[tokio::test]
async fn concurrency_is_summed_over_replicas_and_a_failing_one_is_tolerated() {
    let a = Arc::new(Mutex::new(queue(2, 10)));
    let b = Arc::new(Mutex::new(queue(1, 5)));
    let urls = vec![admin_server(a.clone()).await, admin_server(b.clone()).await];
    let ctx = ScalerContext {
        http: HttpShared::new(
            index(
                "{scaleTargetRef: {name: hello, service: hello, port: 8081}, scalingMetric: {concurrency: {targetValue: 3}}}",
            ),
            ActivatorDiscovery {
                admin_urls: urls,
                service: None,
            },
        ),
        ..ScalerContext::default()
    };
    let scaler = build_scaler(
        &config(&[
            ("httpScaledObject", "hello"),
            ("scalerAddress", "ignored.ns:9090"),
        ]),
        &ctx,
    )
    .expect("builds");
    let specs = scaler.metric_specs();
    let ebb::scalers::MetricSpec::External { name, target } = &specs[0] else {
        panic!("external metric expected: {specs:?}");
    };
    assert_eq!(name, "s0-http-default_002Fhello");
    assert_eq!(target.value, 3.0);

    let read = scaler.get_metrics_and_activity(name).await.expect("reads");
    assert_eq!(read.values, vec![3.0]);
    assert!(read.active, "requests in flight (held ones too) are activity");

    // Replica b fails: its last concurrency stays in the sum.
    *b.lock().expect("lock") = None;
    *a.lock().expect("lock") = queue(4, 12);
    let read = scaler
        .get_metrics_and_activity(name)
        .await
        .expect("one replica is enough");
    assert_eq!(read.values, vec![5.0]);

    // Every replica fails: the read fails, naming them.
    *a.lock().expect("lock") = None;
    let err = scaler
        .get_metrics_and_activity(name)
        .await
        .expect_err("no replica answered");
    assert!(err.to_string().contains("no activator replica answered"), "{err}");
}

#[tokio::test]
async fn rate_counts_requests_between_reads_and_keeps_the_object_active() {
    let a = Arc::new(Mutex::new(queue(0, 100)));
    let b = Arc::new(Mutex::new(queue(0, 50)));
    let urls = vec![admin_server(a.clone()).await, admin_server(b.clone()).await];
    let ctx = ScalerContext {
        http: HttpShared::new(
            index(
                "{scaleTargetRef: {name: hello, service: hello, port: 8081}, scalingMetric: {requestRate: {targetValue: 10, window: 10m, granularity: 1s}}}",
            ),
            ActivatorDiscovery {
                admin_urls: urls,
                service: None,
            },
        ),
        ..ScalerContext::default()
    };
    let scaler = build_scaler(&config(&[("httpScaledObject", "hello")]), &ctx).expect("builds");
    let name = "s0-http-default_002Fhello";
    // The first read of a replica only learns its counter.
    let read = scaler.get_metrics_and_activity(name).await.expect("reads");
    assert_eq!(read.values, vec![0.0]);
    assert!(!read.active);
    // One new request on each replica: a small rate, never rounded to zero, and active.
    *a.lock().expect("lock") = queue(0, 101);
    *b.lock().expect("lock") = queue(0, 51);
    let read = scaler.get_metrics_and_activity(name).await.expect("reads");
    assert!(read.values[0] > 0.0, "{:?}", read.values);
    assert!(read.active, "a request seen in the window is activity");
    // A restarted replica (smaller counter) counts its whole value.
    *b.lock().expect("lock") = queue(0, 2);
    let before = read.values[0];
    let read = scaler.get_metrics_and_activity(name).await.expect("reads");
    assert!(read.values[0] > before, "{} <= {before}", read.values[0]);
}

#[tokio::test]
async fn older_and_newer_metadata_shapes_build() {
    let ctx = ScalerContext {
        http: HttpShared::new(
            index(
                "{hosts: [hello.example.com], scaleTargetRef: {name: hello, service: hello, port: 8081}, targetPendingRequests: 7}",
            ),
            ActivatorDiscovery {
                admin_urls: vec!["http://127.0.0.1:1".into()],
                service: None,
            },
        ),
        ..ScalerContext::default()
    };
    let legacy = build_scaler(
        &config(&[("hosts", "hello.example.com"), ("pathPrefixes", "")]),
        &ctx,
    )
    .expect("v0.7 shape builds");
    let ebb::scalers::MetricSpec::External { target, .. } = &legacy.metric_specs()[0] else {
        panic!("external");
    };
    assert_eq!(
        target.value, 7.0,
        "the target of the HTTPScaledObject routing that host"
    );
    let route = build_scaler(&config(&[("interceptorRoute", "r")]), &ctx).expect("v0.14 shape builds");
    assert_eq!(
        route.metric_specs().len(),
        1,
        "unknown route: the add-on's default concurrency"
    );
    let err = build_scaler(&config(&[("scalerAddress", "x.y:1")]), &ctx).expect_err("no target");
    assert!(err.to_string().contains("httpScaledObject"), "{err}");
}

#[tokio::test]
async fn explain_sees_each_replicas_live_route_counts_and_their_sum() {
    // The stand-in answers every path alike, so one body carries both shapes: `/queue`'s
    // capitalised fields and `/routes`' own.
    let body = |held: u64, in_flight: u64| {
        Some(format!(
            r#"{{"default/hello": {{"Concurrency": {in_flight}, "RequestCount": 9, "concurrency": {in_flight}, "held": {held}, "requestCount": 9, "target": "hello:8081"}}}}"#
        ))
    };
    let a = Arc::new(Mutex::new(body(2, 3)));
    let b = Arc::new(Mutex::new(body(1, 1)));
    let c = Arc::new(Mutex::new(None));
    let urls = vec![
        admin_server(a).await,
        admin_server(b).await,
        admin_server(c).await,
    ];
    let ctx = ScalerContext {
        http: HttpShared::new(
            index("{scaleTargetRef: {name: hello, service: hello, port: 8081}}"),
            ActivatorDiscovery {
                admin_urls: urls.clone(),
                service: None,
            },
        ),
        ..ScalerContext::default()
    };
    let scaler = build_scaler(&config(&[("httpScaledObject", "hello")]), &ctx).expect("builds");
    let (key, live) = scaler
        .live_detail()
        .await
        .expect("the activator's trigger has a live view");
    assert_eq!(key, ebb::scalers::http_push::LIVE_KEY);
    let route = &live["routes"]["default/hello"];
    assert_eq!(route["total"]["held"], 3, "{live}");
    assert_eq!(route["total"]["concurrency"], 4, "{live}");
    assert_eq!(route["total"]["requestCount"], 18, "{live}");
    assert!(
        route["total"].get("target").is_none(),
        "only counters add up: {live}"
    );
    assert_eq!(route["replicas"][&urls[0]]["held"], 2, "{live}");
    let failed = route["replicas"][&urls[2]]["error"].as_str().unwrap_or_default();
    assert!(
        failed.contains("status 500"),
        "a failing replica is named with its error: {live}"
    );

    // Other triggers have none.
    let cron = build_scaler(
        &ScalerConfig {
            trigger_type: "cron".into(),
            metadata: [
                ("timezone", "Etc/UTC"),
                ("start", "0 0 1 1 *"),
                ("end", "1 0 1 1 *"),
                ("desiredReplicas", "2"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..config(&[])
        },
        &ScalerContext::default(),
    )
    .expect("cron builds");
    assert!(cron.live_detail().await.is_none());
}

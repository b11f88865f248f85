//! Bad input never panics: arbitrary paths, queries, selectors and metric names.

use ebb::{
    external_metrics::{
        handlers::{label_selector_param, parse_metric_path},
        metrics::Route,
    },
    quantity, scalers, selector,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn paths_never_panic(path in "(/[a-zA-Z0-9%._~+!-]{0,12}){0,8}/?") {
        let _ = Route::of(&path);
        let _ = parse_metric_path(&path);
        let full = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces{path}");
        if let Some((ns, metric)) = parse_metric_path(&full) {
            prop_assert!(!ns.is_empty() && !metric.is_empty());
            prop_assert!(!ns.contains('/') && !metric.contains('/'));
        }
    }

    #[test]
    fn queries_and_selectors_never_panic(q in ".{0,64}") {
        let raw = label_selector_param(Some(&q));
        let _ = selector::parse(&raw);
        let _ = selector::parse(&q);
    }

    #[test]
    fn metric_names_never_panic(name in ".{0,40}", idx in 0usize..200) {
        let m = scalers::metric_name(idx, &name);
        let prefix = format!("s{idx}-");
        prop_assert!(m.starts_with(&prefix));
        let stripped = scalers::strip_metric_prefix(idx, &m);
        prop_assert!(stripped.is_ok());
        let _ = quantity::parse_quantity(&name);
    }
}

#[test]
fn path_edge_cases_from_the_reference_server() {
    let gv = "/apis/external.metrics.k8s.io/v1beta1";
    assert_eq!(parse_metric_path(&format!("{gv}/nonexistent-metric")), None);
    assert_eq!(parse_metric_path(&format!("{gv}/namespaces/foo")), None);
    assert_eq!(parse_metric_path(&format!("{gv}/namespaces/foo/")), None);
    assert_eq!(
        parse_metric_path(&format!("{gv}/namespaces/foo/group/metric")),
        None
    );
    assert_eq!(
        parse_metric_path(&format!("{gv}/namespaces/default/my-external-metric")),
        Some(("default".into(), "my-external-metric".into()))
    );
    // Percent-escaped characters in the segment are decoded; an escaped slash is refused.
    assert_eq!(
        parse_metric_path(&format!("{gv}/namespaces/default/s0-a%7Cb")),
        Some(("default".into(), "s0-a|b".into()))
    );
    assert_eq!(parse_metric_path(&format!("{gv}/namespaces/default/a%2Fb")), None);
    assert_eq!(parse_metric_path(&format!("{gv}/namespaces/default/%FF")), None);
}

#[test]
fn label_selector_decoding() {
    assert_eq!(
        label_selector_param(Some("labelSelector=scaledobject.keda.sh%2Fname%3Dfoo")),
        "scaledobject.keda.sh/name=foo"
    );
    assert_eq!(
        label_selector_param(Some("labelSelector=env+in+%28y%2Cz%29")),
        "env in (y,z)"
    );
    assert_eq!(label_selector_param(Some("pretty=true")), "");
    assert_eq!(label_selector_param(None), "");
    let sel =
        selector::parse(&label_selector_param(Some("labelSelector=env+in+%28y%2Cz%29"))).expect("valid");
    assert_eq!(sel.to_string(), "env in (y,z)");
}

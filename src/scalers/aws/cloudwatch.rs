//! `aws-cloudwatch` scaler (spec §12.3): one `GetMetricData` call per read over a window that
//! ends at (now − `metricEndTimeOffset`) truncated to `metricStatPeriod`; the newest value of the
//! first result is the metric.

use crate::scalers::SingleMetric;
use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_sdk_cloudwatch::{
    primitives::DateTime,
    types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy, StandardUnit},
};
use futures::future::BoxFuture;

use super::{AwsShared, call_timeout, credential_source, sdk_error, timed_call, trigger_context};
use crate::{
    crd::scaled_object::MetricTargetType,
    scalers::{
        MetricTarget, MetricsAndActivity, ScalerConfig, ScalerContext, ScalerError, metric_name,
        params::{METADATA, METADATA_AUTH, Params},
    },
};

/// Seconds from Go's zero time (year 1) to the Unix epoch: Go's `Time.Truncate` rounds relative
/// to year 1, which differs from Unix-epoch rounding for periods that do not divide a day.
const GO_ZERO_TO_UNIX: i64 = 62_135_596_800;

/// Source of "now", injectable for tests.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What one read asks CloudWatch for.
#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    /// A metric math / Metrics Insights expression (query id `q1`).
    Expression(String),
    /// One metric statistic (query id `c1`).
    Stat {
        /// CloudWatch namespace.
        namespace: String,
        /// Metric name.
        metric_name: String,
        /// (name, value) pairs.
        dimensions: Vec<(String, String)>,
        /// Statistic, e.g. `Average`.
        stat: String,
        /// Optional StandardUnit name.
        unit: Option<String>,
    },
}

/// CloudWatch GetMetricData scaler.
pub struct CloudWatchScaler {
    query: Query,
    target_metric_value: f64,
    activation_target_metric_value: f64,
    min_metric_value: f64,
    ignore_null_values: bool,
    metric_collection_time: i64,
    metric_stat_period: i64,
    metric_end_time_offset: i64,
    account_id: Option<String>,
    region: String,
    endpoint: Option<String>,
    metric_type: MetricTargetType,
    timeout: Duration,
    config: ScalerConfig,
    aws: AwsShared,
    clock: Clock,
    client: tokio::sync::OnceCell<aws_sdk_cloudwatch::Client>,
}

impl fmt::Debug for CloudWatchScaler {
    // The config carries auth params (secrets), so it is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudWatchScaler")
            .field("query", &self.query)
            .field("target_metric_value", &self.target_metric_value)
            .field(
                "activation_target_metric_value",
                &self.activation_target_metric_value,
            )
            .field("min_metric_value", &self.min_metric_value)
            .field("ignore_null_values", &self.ignore_null_values)
            .field("metric_collection_time", &self.metric_collection_time)
            .field("metric_stat_period", &self.metric_stat_period)
            .field("metric_end_time_offset", &self.metric_end_time_offset)
            .field("account_id", &self.account_id)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The `[start, end)` query window in Unix seconds for `now` (spec §12.3).
pub fn query_window(now: SystemTime, end_offset: i64, period: i64, collection_time: i64) -> (i64, i64) {
    // A clock before 1970 is treated as the epoch; it only happens with a broken clock.
    let now_secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let now_secs = i64::try_from(now_secs).unwrap_or(i64::MAX / 2);
    let since_go_zero = now_secs
        .saturating_add(GO_ZERO_TO_UNIX)
        .saturating_sub(end_offset);
    let period = period.max(1);
    let end = since_go_zero - since_go_zero.rem_euclid(period) - GO_ZERO_TO_UNIX;
    (end.saturating_sub(collection_time), end)
}

/// Checks `metricStatPeriod` and `metricCollectionTime` as KEDA does.
fn validate_period(period: i64, collection_time: i64) -> Result<(), ScalerError> {
    if period < 1 {
        return Err(ScalerError::Config(format!(
            "metricStatPeriod can not be smaller than 1, but {period} is given"
        )));
    }
    if period <= 60 && ![1, 5, 10, 30, 60].contains(&period) {
        return Err(ScalerError::Config(format!(
            "metricStatPeriod < 60 has to be one of [1, 5, 10, 30], but {period} is given"
        )));
    }
    if period > 60 && period % 60 != 0 {
        return Err(ScalerError::Config(format!(
            "metricStatPeriod >= 60 has to be a multiple of 60, but {period} is given"
        )));
    }
    if period > i64::from(i32::MAX) {
        return Err(ScalerError::Config(format!(
            "metricStatPeriod {period} is too large"
        )));
    }
    if collection_time < 0 || collection_time % period != 0 {
        return Err(ScalerError::Config(format!(
            "metricCollectionTime must be greater than 0 and a multiple of metricStatPeriod({period}), \
             {collection_time} is given"
        )));
    }
    Ok(())
}

impl CloudWatchScaler {
    /// Parses the trigger metadata and checks the credential source.
    pub fn new(config: &ScalerConfig, ctx: &ScalerContext) -> Result<Self, ScalerError> {
        let p = Params::new(config);
        let expression: Option<String> = p.meta("expression").optional()?;
        let metric_stat: String = p.meta("metricStat").or("Average".to_string())?;
        let metric_unit: Option<String> = p.meta("metricUnit").optional()?;
        let query = match expression {
            Some(e) => Query::Expression(e),
            None => {
                let namespace: String = p
                    .meta("namespace")
                    .optional()?
                    .ok_or_else(|| ScalerError::Config("namespace not given".into()))?;
                let metric_name: String = p
                    .meta("metricName")
                    .optional()?
                    .ok_or_else(|| ScalerError::Config("metricName not given".into()))?;
                let names = p.get(&["dimensionName"], METADATA).list(";").unwrap_or_default();
                let values = p.get(&["dimensionValue"], METADATA).list(";").unwrap_or_default();
                if names.len() != values.len() {
                    return Err(ScalerError::Config(
                        "dimensionName and dimensionValue are not matching in size".into(),
                    ));
                }
                if let Some(unit) = &metric_unit
                    && !StandardUnit::values().contains(&unit.as_str())
                {
                    return Err(ScalerError::Config(format!(
                        "metricUnit is not a valid value {unit:?}, must be one of [{}]",
                        StandardUnit::values().join(" ")
                    )));
                }
                Query::Stat {
                    namespace,
                    metric_name,
                    dimensions: names.into_iter().zip(values).collect(),
                    stat: metric_stat,
                    unit: metric_unit,
                }
            }
        };
        let target_metric_value: f64 = p.meta("targetMetricValue").required()?;
        let activation_target_metric_value: f64 = p.meta("activationTargetMetricValue").or(0.0)?;
        let min_metric_value: f64 = p.meta("minMetricValue").required()?;
        let ignore_null_values: bool = p.meta("ignoreNullValues").or(true)?;
        let metric_collection_time: i64 = p.meta("metricCollectionTime").or(300)?;
        let metric_stat_period: i64 = p.meta("metricStatPeriod").or(300)?;
        let metric_end_time_offset: i64 = p.meta("metricEndTimeOffset").or(0)?;
        validate_period(metric_stat_period, metric_collection_time)?;
        let account_id: Option<String> = p.meta("awsAccountId").optional()?;
        let region: String = p.get(&["awsRegion"], METADATA_AUTH).required()?;
        let endpoint: Option<String> = p.meta("awsEndpoint").optional()?;
        credential_source(config)?;
        Ok(Self {
            query,
            target_metric_value,
            activation_target_metric_value,
            min_metric_value,
            ignore_null_values,
            metric_collection_time,
            metric_stat_period,
            metric_end_time_offset,
            account_id,
            region,
            endpoint,
            metric_type: config.metric_type,
            timeout: call_timeout(config),
            config: config.clone(),
            aws: ctx.aws.clone(),
            clock: Arc::new(SystemTime::now),
            client: tokio::sync::OnceCell::new(),
        })
    }

    /// Replaces the clock used for the query window.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The parsed query.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The `[start, end)` window a read at the clock's "now" asks for, in Unix seconds.
    pub fn window(&self) -> (i64, i64) {
        query_window(
            (self.clock)(),
            self.metric_end_time_offset,
            self.metric_stat_period,
            self.metric_collection_time,
        )
    }

    fn build_query(&self) -> MetricDataQuery {
        // validate_period bounds the period to i32.
        let period = i32::try_from(self.metric_stat_period).unwrap_or(i32::MAX);
        let builder = match &self.query {
            Query::Expression(e) => MetricDataQuery::builder().id("q1").expression(e).period(period),
            Query::Stat {
                namespace,
                metric_name,
                dimensions,
                stat,
                unit,
            } => {
                let mut metric = Metric::builder().namespace(namespace).metric_name(metric_name);
                for (name, value) in dimensions {
                    metric = metric.dimensions(Dimension::builder().name(name).value(value).build());
                }
                let stat = MetricStat::builder()
                    .metric(metric.build())
                    .period(period)
                    .stat(stat)
                    .set_unit(unit.as_deref().map(StandardUnit::from))
                    .build();
                MetricDataQuery::builder().id("c1").metric_stat(stat)
            }
        };
        builder
            .return_data(true)
            .set_account_id(self.account_id.clone())
            .build()
    }

    /// Where this trigger's CloudWatch calls go, for error messages.
    fn host(&self) -> String {
        self.aws
            .host("monitoring", &self.region, self.endpoint.as_deref())
    }

    async fn client(&self) -> Result<&aws_sdk_cloudwatch::Client, ScalerError> {
        self.client
            .get_or_try_init(|| async {
                let sdk = self
                    .aws
                    .sdk_config(&self.config, &self.region, self.endpoint.as_deref())
                    .await?;
                Ok(aws_sdk_cloudwatch::Client::new(&sdk))
            })
            .await
    }

    async fn metric_value(&self) -> Result<f64, ScalerError> {
        let query = self.build_query();
        let (start, end) = self.window();
        let client = self.client().await?;
        let out = client
            .get_metric_data()
            .start_time(DateTime::from_secs(start))
            .end_time(DateTime::from_secs(end))
            .scan_by(ScanBy::TimestampDescending)
            .metric_data_queries(query)
            .send()
            .await
            .map_err(|e| sdk_error(&self.config, "GetMetricData", &self.host(), self.timeout, &e))?;
        let Some(first) = out.metric_data_results().first() else {
            return Ok(self.min_metric_value);
        };
        match first.values().first() {
            Some(v) => Ok(*v),
            None if self.ignore_null_values => Ok(self.min_metric_value),
            None => Err(ScalerError::Upstream(format!(
                "{}: empty metric data received, ignoreNullValues is false",
                trigger_context(&self.config)
            ))),
        }
    }
}

impl SingleMetric for CloudWatchScaler {
    fn activation_threshold(&self) -> f64 {
        self.activation_target_metric_value
    }

    fn metric(&self) -> (String, MetricTarget) {
        (
            metric_name(self.config.trigger_index, "aws-cloudwatch"),
            MetricTarget {
                kind: self.metric_type,
                value: self.target_metric_value,
                integer: false,
            },
        )
    }

    fn read_metric(&self) -> BoxFuture<'_, Result<MetricsAndActivity, ScalerError>> {
        Box::pin(async move {
            let value = timed_call(
                &self.config,
                "GetMetricData",
                &self.host(),
                self.timeout,
                self.metric_value(),
            )
            .await?;
            Ok(MetricsAndActivity {
                values: vec![value],
                active: value > self.activation_target_metric_value,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scalers::{MetricSpec, Scaler};

    fn config(meta: &[(&str, &str)]) -> ScalerConfig {
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        ScalerConfig {
            trigger_type: "aws-cloudwatch".into(),
            trigger_index: 3,
            metadata: map(meta),
            auth_params: map(&[("awsAccessKeyID", "AKID"), ("awsSecretAccessKey", "SECRET")]),
            global_http_timeout: Duration::from_secs(3),
            ..Default::default()
        }
    }

    const BASE: &[(&str, &str)] = &[
        ("namespace", "AWS/SQS"),
        ("metricName", "ApproximateNumberOfMessagesVisible"),
        ("dimensionName", "QueueName"),
        ("dimensionValue", "keda"),
        ("targetMetricValue", "2"),
        ("minMetricValue", "0"),
        ("awsRegion", "eu-west-1"),
    ];

    fn with(extra: &[(&'static str, &'static str)], without: &[&str]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| !without.contains(k))
            .collect();
        for (k, val) in extra {
            v.retain(|(kk, _)| kk != k);
            v.push((k, val));
        }
        v
    }

    fn build(meta: &[(&str, &str)]) -> Result<CloudWatchScaler, String> {
        CloudWatchScaler::new(&config(meta), &ScalerContext::default()).map_err(|e| e.to_string())
    }

    fn ok(meta: &[(&str, &str)]) -> CloudWatchScaler {
        build(meta).unwrap_or_else(|e| panic!("{meta:?}: {e}"))
    }

    #[test]
    fn defaults_and_metric_name() {
        let s = ok(BASE);
        assert_eq!(
            s.query(),
            &Query::Stat {
                namespace: "AWS/SQS".into(),
                metric_name: "ApproximateNumberOfMessagesVisible".into(),
                dimensions: vec![("QueueName".into(), "keda".into())],
                stat: "Average".into(),
                unit: None,
            }
        );
        assert_eq!(
            (
                s.metric_collection_time,
                s.metric_stat_period,
                s.metric_end_time_offset
            ),
            (300, 300, 0)
        );
        assert!(s.ignore_null_values);
        assert_eq!(s.activation_target_metric_value, 0.0);
        assert_eq!(
            s.metric_specs(),
            vec![MetricSpec::External {
                name: "s3-aws-cloudwatch".into(),
                target: MetricTarget {
                    kind: MetricTargetType::AverageValue,
                    value: 2.0,
                    integer: false
                }
            }]
        );
        let q = s.build_query();
        assert_eq!(q.id(), Some("c1"));
        assert_eq!(q.return_data(), Some(true));
        assert_eq!(q.metric_stat().map(|m| m.period()), Some(Some(300)));
    }

    #[test]
    fn valid_metadata_table() {
        let s = ok(&with(
            &[
                ("dimensionName", "A;B"),
                ("dimensionValue", "1; 2"),
                ("metricStat", "Sum"),
                ("metricUnit", "Count"),
                ("metricStatPeriod", "60"),
                ("metricCollectionTime", "120"),
                ("metricEndTimeOffset", "30"),
                ("activationTargetMetricValue", "1.5"),
                ("ignoreNullValues", "false"),
                ("awsAccountId", "123456789012"),
            ],
            &[],
        ));
        assert!(matches!(s.query(), Query::Stat { dimensions, stat, unit, .. }
            if dimensions.len() == 2 && dimensions[1] == ("B".to_string(), "2".to_string())
            && stat == "Sum" && unit.as_deref() == Some("Count")));
        assert_eq!(s.build_query().account_id(), Some("123456789012"));
        // Expression: namespace/metric/unit checks are skipped.
        let s = ok(&with(
            &[("expression", "SELECT MAX(x) FROM y"), ("metricUnit", "Hour")],
            &["namespace", "metricName", "dimensionName"],
        ));
        assert_eq!(s.query(), &Query::Expression("SELECT MAX(x) FROM y".into()));
        let q = s.build_query();
        assert_eq!((q.id(), q.period()), (Some("q1"), Some(300)));
        // No dimensions at all is fine when the counts match.
        ok(&with(&[], &["dimensionName", "dimensionValue"]));
        for period in ["1", "5", "10", "30", "60", "120", "3600"] {
            ok(&with(
                &[("metricStatPeriod", period), ("metricCollectionTime", "0")],
                &[],
            ));
        }
    }

    #[test]
    fn invalid_metadata_table() {
        let cases: &[(Kv, &[&str], &str)] = &[
            (&[], &["namespace"], "namespace not given"),
            (&[], &["metricName"], "metricName not given"),
            (&[("dimensionValue", "a;b")], &[], "not matching in size"),
            (
                &[],
                &["targetMetricValue"],
                "missing required parameter \"targetMetricValue\"",
            ),
            (
                &[],
                &["minMetricValue"],
                "missing required parameter \"minMetricValue\"",
            ),
            (&[], &["awsRegion"], "missing required parameter \"awsRegion\""),
            (&[("metricUnit", "Hour")], &[], "metricUnit is not a valid value"),
            (&[("metricStatPeriod", "0")], &[], "can not be smaller than 1"),
            (&[("metricStatPeriod", "7")], &[], "has to be one of"),
            (&[("metricStatPeriod", "90")], &[], "multiple of 60"),
            (
                &[("metricCollectionTime", "450")],
                &[],
                "multiple of metricStatPeriod",
            ),
            (
                &[("metricCollectionTime", "-300")],
                &[],
                "multiple of metricStatPeriod",
            ),
            (
                &[("targetMetricValue", "x")],
                &[],
                "error parsing targetMetricValue",
            ),
            (
                &[("ignoreNullValues", "yes")],
                &[],
                "error parsing ignoreNullValues",
            ),
            (
                &[("metricStatPeriod", "1.5")],
                &[],
                "error parsing metricStatPeriod",
            ),
        ];
        for (extra, without, want) in cases {
            match build(&with(extra, without)) {
                Ok(s) => panic!("{extra:?} built {s:?}"),
                Err(e) => assert!(e.contains(want), "{extra:?}: {e} (want {want})"),
            }
        }
    }

    type Kv<'a> = &'a [(&'a str, &'a str)];

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn window_math() {
        // 2024-01-01T00:07:31Z, period 300 → end 00:05:00, start 00:00:00.
        let t = 1_704_067_651;
        assert_eq!(query_window(at(t), 0, 300, 300), (1_704_067_200, 1_704_067_500));
        // End offset moves the end back before truncation.
        assert_eq!(query_window(at(t), 180, 300, 600), (1_704_066_600, 1_704_067_200));
        // Sub-second precision is dropped.
        assert_eq!(
            query_window(at(t) + Duration::from_millis(900), 0, 60, 120),
            (1_704_067_500, 1_704_067_620)
        );
        // A period that does not divide a day truncates relative to Go's zero time, as KEDA does.
        let (_, end) = query_window(at(t), 0, 420, 420);
        assert_eq!((end + GO_ZERO_TO_UNIX) % 420, 0);
        assert!(end <= t as i64 && t as i64 - end < 420);
        // Collection time 0 gives an empty window at the truncated end.
        assert_eq!(query_window(at(t), 0, 60, 0), (1_704_067_620, 1_704_067_620));
    }

    #[test]
    fn injected_clock_drives_the_window() {
        let s = ok(BASE).with_clock(Arc::new(|| at(1_704_067_651)));
        assert_eq!(s.window(), (1_704_067_200, 1_704_067_500));
    }
}

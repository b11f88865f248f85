//! `aws-sqs-queue` scaler (spec §12.2): one `GetQueueAttributes` call per read, summing the
//! visible, in-flight (`scaleOnInFlight`, default on) and delayed (`scaleOnDelayed`) counts.
//!
//! Unlike KEDA, `awsRegion` may be left out for a standard queue URL
//! (`https://sqs.<region>.amazonaws.com/<account>/<name>`): the region is then taken from the
//! host. An explicit `awsRegion` always wins.

use crate::scalers::SingleMetric;
use std::{fmt, time::Duration};

use aws_sdk_sqs::types::QueueAttributeName;
use futures::future::BoxFuture;

use super::{AwsShared, call_timeout, credential_source, sdk_error, timed_call, trigger_context};
use crate::{
    crd::scaled_object::MetricTargetType,
    scalers::{
        MetricTarget, MetricsAndActivity, ScalerConfig, ScalerContext, ScalerError, metric_name,
        params::{METADATA_AUTH, METADATA_ENV, Params},
    },
};

/// SQS queue-length scaler.
pub struct SqsScaler {
    queue_url: String,
    queue_name: String,
    queue_length: i64,
    activation_queue_length: i64,
    region: String,
    endpoint: Option<String>,
    scale_on_in_flight: bool,
    scale_on_delayed: bool,
    metric_type: MetricTargetType,
    timeout: Duration,
    config: ScalerConfig,
    aws: AwsShared,
    client: tokio::sync::OnceCell<aws_sdk_sqs::Client>,
}

impl fmt::Debug for SqsScaler {
    // The config carries auth params (secrets), so it is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsScaler")
            .field("queue_url", &self.queue_url)
            .field("queue_name", &self.queue_name)
            .field("queue_length", &self.queue_length)
            .field("activation_queue_length", &self.activation_queue_length)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("scale_on_in_flight", &self.scale_on_in_flight)
            .field("scale_on_delayed", &self.scale_on_delayed)
            .finish_non_exhaustive()
    }
}

/// The queue name of a `queueURL`: the last of exactly two path segments of an absolute URL (or
/// absolute path, as Go's `ParseRequestURI` accepts), else the value itself.
pub fn queue_name(queue_url: &str) -> Result<String, ScalerError> {
    let path = if queue_url.starts_with('/') {
        Some(queue_url.split(['?', '#']).next().unwrap_or_default().to_string())
    } else {
        reqwest::Url::parse(queue_url).ok().map(|u| u.path().to_string())
    };
    let Some(path) = path else {
        return Ok(queue_url.to_string());
    };
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", _account, name] if !name.is_empty() => Ok((*name).to_string()),
        _ => Err(ScalerError::Config("cannot get queueName from queueURL".into())),
    }
}

/// The region in a standard SQS endpoint host (`sqs.<region>.amazonaws.com[.cn]` or the legacy
/// `<region>.queue.amazonaws.com`), if `queue_url` has one.
pub fn region_from_queue_url(queue_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(queue_url).ok()?;
    let host = url.host_str()?;
    let parts: Vec<&str> = host.split('.').collect();
    let region = match parts.as_slice() {
        ["sqs", region, "amazonaws", "com", ..] => region,
        [region, "queue", "amazonaws", "com", ..] => region,
        _ => return None,
    };
    Some((*region).to_string()).filter(|r| !r.is_empty())
}

impl SqsScaler {
    /// Parses the trigger metadata and checks the credential source.
    pub fn new(config: &ScalerConfig, ctx: &ScalerContext) -> Result<Self, ScalerError> {
        let p = Params::new(config);
        let queue_url: String = p.get(&["queueURL"], METADATA_ENV).required()?;
        let queue_name = queue_name(&queue_url)?;
        let queue_length: i64 = p.meta("queueLength").or(5)?;
        let activation_queue_length: i64 = p.meta("activationQueueLength").or(0)?;
        let region_param = p.get(&["awsRegion"], METADATA_AUTH);
        let region = match region_param.optional::<String>()? {
            Some(r) => r,
            None => region_from_queue_url(&queue_url).ok_or_else(|| region_param.missing_error())?,
        };
        let endpoint: Option<String> = p.meta("awsEndpoint").optional()?;
        let scale_on_in_flight: bool = p.meta("scaleOnInFlight").or(true)?;
        let scale_on_delayed: bool = p.meta("scaleOnDelayed").or(false)?;
        credential_source(config)?;
        Ok(Self {
            queue_url,
            queue_name,
            queue_length,
            activation_queue_length,
            region,
            endpoint,
            scale_on_in_flight,
            scale_on_delayed,
            metric_type: config.metric_type,
            timeout: call_timeout(config),
            config: config.clone(),
            aws: ctx.aws.clone(),
            client: tokio::sync::OnceCell::new(),
        })
    }

    /// The attributes one read asks for, in summing order.
    pub fn attribute_names(&self) -> Vec<QueueAttributeName> {
        let mut names = vec![QueueAttributeName::ApproximateNumberOfMessages];
        if self.scale_on_in_flight {
            names.push(QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
        }
        if self.scale_on_delayed {
            names.push(QueueAttributeName::ApproximateNumberOfMessagesDelayed);
        }
        names
    }

    /// Where this trigger's SQS calls go, for error messages.
    fn host(&self) -> String {
        self.aws.host("sqs", &self.region, self.endpoint.as_deref())
    }

    async fn client(&self) -> Result<&aws_sdk_sqs::Client, ScalerError> {
        self.client
            .get_or_try_init(|| async {
                let sdk = self
                    .aws
                    .sdk_config(&self.config, &self.region, self.endpoint.as_deref())
                    .await?;
                Ok(aws_sdk_sqs::Client::new(&sdk))
            })
            .await
    }

    async fn queue_messages(&self) -> Result<i64, ScalerError> {
        let client = self.client().await?;
        let names = self.attribute_names();
        let out = client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .set_attribute_names(Some(names.clone()))
            .send()
            .await
            .map_err(|e| sdk_error(&self.config, "GetQueueAttributes", &self.host(), self.timeout, &e))?;
        let attributes = out.attributes();
        let mut total: i64 = 0;
        for name in &names {
            let raw = attributes.and_then(|a| a.get(name)).ok_or_else(|| {
                ScalerError::Upstream(format!(
                    "{}: queue {} has no attribute {}",
                    trigger_context(&self.config),
                    self.queue_name,
                    name.as_str()
                ))
            })?;
            let count: i64 = raw.trim().parse().map_err(|_| {
                ScalerError::Upstream(format!(
                    "{}: attribute {} of queue {} is not an integer: {raw:?}",
                    trigger_context(&self.config),
                    name.as_str(),
                    self.queue_name
                ))
            })?;
            total = total.saturating_add(count);
        }
        Ok(total)
    }
}

impl SingleMetric for SqsScaler {
    fn activation_threshold(&self) -> f64 {
        self.activation_queue_length as f64
    }

    fn metric(&self) -> (String, MetricTarget) {
        (
            metric_name(self.config.trigger_index, &format!("aws-sqs-{}", self.queue_name)),
            MetricTarget {
                kind: self.metric_type,
                value: self.queue_length as f64,
                integer: true,
            },
        )
    }

    fn read_metric(&self) -> BoxFuture<'_, Result<MetricsAndActivity, ScalerError>> {
        Box::pin(async move {
            let count = timed_call(
                &self.config,
                "GetQueueAttributes",
                &self.host(),
                self.timeout,
                self.queue_messages(),
            )
            .await?;
            Ok(MetricsAndActivity {
                values: vec![count as f64],
                active: count > self.activation_queue_length,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scalers::{MetricSpec, Scaler};

    fn config(meta: &[(&str, &str)], auth: &[(&str, &str)], env: &[(&str, &str)]) -> ScalerConfig {
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        ScalerConfig {
            trigger_type: "aws-sqs-queue".into(),
            trigger_index: 1,
            metadata: map(meta),
            auth_params: map(auth),
            resolved_env: map(env),
            global_http_timeout: Duration::from_secs(3),
            ..Default::default()
        }
    }

    type Kv<'a> = &'a [(&'a str, &'a str)];

    const KEYS: &[(&str, &str)] = &[("awsAccessKeyID", "AKID"), ("awsSecretAccessKey", "SECRET")];
    const URL: &str = "https://sqs.eu-west-1.amazonaws.com/account_id/DeleteArtifactQ";

    fn build(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> Result<SqsScaler, String> {
        SqsScaler::new(&config(meta, auth, &[]), &ScalerContext::default()).map_err(|e| e.to_string())
    }

    fn ok(meta: &[(&str, &str)], auth: &[(&str, &str)]) -> SqsScaler {
        match build(meta, auth) {
            Ok(s) => s,
            Err(e) => panic!("{meta:?}: {e}"),
        }
    }

    #[test]
    fn defaults_and_metric_name() {
        let s = ok(&[("queueURL", URL), ("awsRegion", "eu-west-1")], KEYS);
        assert_eq!(s.queue_name, "DeleteArtifactQ");
        assert_eq!(s.queue_length, 5);
        assert_eq!(s.activation_queue_length, 0);
        assert!(s.scale_on_in_flight);
        assert!(!s.scale_on_delayed);
        assert_eq!(
            s.metric_specs(),
            vec![MetricSpec::External {
                name: "s1-aws-sqs-DeleteArtifactQ".into(),
                target: MetricTarget {
                    kind: MetricTargetType::AverageValue,
                    value: 5.0,
                    integer: true
                },
            }]
        );
        assert_eq!(
            s.attribute_names(),
            vec![
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible
            ]
        );
    }

    #[test]
    fn valid_metadata_table() {
        let s = ok(
            &[
                ("queueURL", "my.queue(1)"),
                ("awsRegion", "us-east-1"),
                ("queueLength", "7"),
                ("activationQueueLength", "3"),
                ("scaleOnInFlight", "false"),
                ("scaleOnDelayed", "true"),
                ("awsEndpoint", "http://localhost:4566"),
            ],
            KEYS,
        );
        // A non-URL value is the name; the name is sanitised in the metric name.
        assert_eq!(s.queue_name, "my.queue(1)");
        assert!(
            matches!(&s.metric_specs()[0], MetricSpec::External { name, .. } if name == "s1-aws-sqs-my-queue-1-")
        );
        assert_eq!((s.queue_length, s.activation_queue_length), (7, 3));
        assert_eq!(s.endpoint.as_deref(), Some("http://localhost:4566"));
        assert_eq!(
            s.attribute_names(),
            vec![
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed
            ]
        );
        // Region from auth params; queueURL through the target's env.
        let c = config(
            &[("queueURLFromEnv", "QUEUE")],
            &[("awsRegion", "ap-south-1"), KEYS[0], KEYS[1]],
            &[("QUEUE", URL)],
        );
        let s = SqsScaler::new(&c, &ScalerContext::default()).map_err(|e| e.to_string());
        let s = s.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.region.as_str(), s.queue_name.as_str()),
            ("ap-south-1", "DeleteArtifactQ")
        );
        // Region taken from a standard queue URL when not given.
        assert_eq!(ok(&[("queueURL", URL)], KEYS).region, "eu-west-1");
        assert_eq!(
            region_from_queue_url("https://us-west-2.queue.amazonaws.com/1/q").as_deref(),
            Some("us-west-2")
        );
        assert_eq!(region_from_queue_url("http://127.0.0.1:5000/1/q"), None);
        // A scheme-like value is a URL (as for Go's ParseRequestURI) without the two path segments.
        assert!(queue_name("my.queue:v1").is_err());
        assert_eq!(queue_name("/123/q").ok().as_deref(), Some("q"));
        // Values above 2^31 are fine.
        assert_eq!(
            ok(&[("queueURL", URL), ("queueLength", "3000000000")], KEYS).queue_length,
            3_000_000_000
        );
    }

    #[test]
    fn invalid_metadata_table() {
        let cases: &[(Kv, Kv, &str)] = &[
            (
                &[("awsRegion", "eu-west-1")],
                KEYS,
                "missing required parameter \"queueURL\"",
            ),
            (
                &[("queueURL", "http://127.0.0.1/1/q")],
                KEYS,
                "missing required parameter \"awsRegion\"",
            ),
            (
                &[("queueURL", "https://sqs.eu-west-1.amazonaws.com/account_id/")],
                KEYS,
                "cannot get queueName",
            ),
            (
                &[("queueURL", "https://sqs.eu-west-1.amazonaws.com/a/b/c")],
                KEYS,
                "cannot get queueName",
            ),
            (
                &[("queueURL", "https://sqs.eu-west-1.amazonaws.com/q")],
                KEYS,
                "cannot get queueName",
            ),
            (
                &[("queueURL", URL), ("queueLength", "1.5")],
                KEYS,
                "error parsing queueLength",
            ),
            (
                &[("queueURL", URL), ("activationQueueLength", "x")],
                KEYS,
                "error parsing activationQueueLength",
            ),
            (
                &[("queueURL", URL), ("scaleOnInFlight", "yes")],
                KEYS,
                "error parsing scaleOnInFlight",
            ),
            (&[("queueURL", URL)], &[], "awsAccessKeyID not found"),
            (
                &[("queueURL", URL)],
                &[("awsAccessKeyID", "A")],
                "awsAccessKeyID not found",
            ),
        ];
        for (meta, auth, want) in cases {
            match build(meta, auth) {
                Ok(s) => panic!("{meta:?} built {s:?}"),
                Err(e) => assert!(e.contains(want), "{meta:?}: {e} (want {want})"),
            }
        }
        // identityOwner: operator needs no keys.
        ok(&[("queueURL", URL), ("identityOwner", "operator")], &[]);
    }
}

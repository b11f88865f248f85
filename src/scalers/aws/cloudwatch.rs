//! CloudWatch GetMetricData scaler (being written).
use futures::future::BoxFuture;

use crate::scalers::{MetricSpec, MetricsAndActivity, Scaler, ScalerConfig, ScalerContext, ScalerError};

/// CloudWatch GetMetricData scaler.
#[derive(Debug)]
pub struct CloudWatchScaler;

impl CloudWatchScaler {
    /// Parses the trigger metadata.
    pub fn new(_config: &ScalerConfig, _ctx: &ScalerContext) -> Result<Self, ScalerError> {
        Err(ScalerError::Config(
            "aws-cloudwatch scaler: not implemented yet".into(),
        ))
    }
}

impl Scaler for CloudWatchScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        Vec::new()
    }
    fn get_metrics_and_activity<'a>(
        &'a self,
        _m: &'a str,
    ) -> BoxFuture<'a, Result<MetricsAndActivity, ScalerError>> {
        Box::pin(async { Err(ScalerError::Config("not implemented yet".into())) })
    }
}

//! SQS queue-length scaler (being written).
use futures::future::BoxFuture;

use crate::scalers::{MetricSpec, MetricsAndActivity, Scaler, ScalerConfig, ScalerContext, ScalerError};

/// SQS queue-length scaler.
#[derive(Debug)]
pub struct SqsScaler;

impl SqsScaler {
    /// Parses the trigger metadata.
    pub fn new(_config: &ScalerConfig, _ctx: &ScalerContext) -> Result<Self, ScalerError> {
        Err(ScalerError::Config(
            "aws-sqs-queue scaler: not implemented yet".into(),
        ))
    }
}

impl Scaler for SqsScaler {
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

//! `metrics-api` scaler (stub, being written).
use futures::future::BoxFuture;

use super::{MetricSpec, MetricsAndActivity, Scaler, ScalerConfig, ScalerError};

/// Reads one number from an HTTP endpoint.
#[derive(Debug)]
pub struct MetricsApiScaler;

impl MetricsApiScaler {
    /// Parses the trigger metadata.
    pub fn new(_config: &ScalerConfig) -> Result<Self, ScalerError> {
        Err(ScalerError::Config(
            "metrics-api: not implemented yet".into(),
        ))
    }
}

impl Scaler for MetricsApiScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        Vec::new()
    }
    fn get_metrics_and_activity<'a>(
        &'a self,
        _m: &'a str,
    ) -> BoxFuture<'a, Result<MetricsAndActivity, ScalerError>> {
        Box::pin(async { Err(ScalerError::Config("unimplemented".into())) })
    }
}

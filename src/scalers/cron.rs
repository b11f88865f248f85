//! `cron` scaler (stub, being written).
use futures::future::BoxFuture;

use super::{MetricSpec, MetricsAndActivity, Scaler, ScalerConfig, ScalerError};

/// Scales to `desiredReplicas` inside a cron window.
#[derive(Debug)]
pub struct CronScaler;

impl CronScaler {
    /// Parses the trigger metadata.
    pub fn new(_config: &ScalerConfig) -> Result<Self, ScalerError> {
        Err(ScalerError::Config("cron: not implemented yet".into()))
    }
}

impl Scaler for CronScaler {
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

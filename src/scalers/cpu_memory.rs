//! cpu / memory resource-metric scaler (being written).
use futures::future::BoxFuture;

use crate::scalers::{MetricSpec, MetricsAndActivity, Scaler, ScalerConfig, ScalerError};

/// cpu / memory resource-metric scaler.
#[derive(Debug)]
pub struct CpuMemoryScaler;

impl CpuMemoryScaler {
    /// Parses the trigger metadata.
    pub fn new(_config: &ScalerConfig) -> Result<Self, ScalerError> {
        Err(ScalerError::Config(
            "cpu/memory scaler: not implemented yet".into(),
        ))
    }
}

impl Scaler for CpuMemoryScaler {
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

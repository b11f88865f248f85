//! kubernetes-workload pod-count scaler (being written).
use futures::future::BoxFuture;

use crate::scalers::{MetricSpec, MetricsAndActivity, Scaler, ScalerConfig, ScalerContext, ScalerError};

/// kubernetes-workload pod-count scaler.
#[derive(Debug)]
pub struct WorkloadScaler;

impl WorkloadScaler {
    /// Parses the trigger metadata.
    pub fn new(_config: &ScalerConfig, _ctx: &ScalerContext) -> Result<Self, ScalerError> {
        Err(ScalerError::Config(
            "kubernetes-workload scaler: not implemented yet".into(),
        ))
    }
}

impl Scaler for WorkloadScaler {
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

/// Pod counts per namespace and selector, from a watch cache (being written).
#[derive(Clone, Debug, Default)]
pub struct PodIndex;

//! Shared AWS configuration and credential resolution (being written).

pub mod cloudwatch;
pub mod sqs;

/// Shared AWS SDK configuration and credential caches (being written).
#[derive(Clone, Debug, Default)]
pub struct AwsShared;

//! Where ScaledObjects come from: a kube watch in a cluster, or YAML files with `--local DIR`.
//!
//! Both feed the scaler [`Registry`](crate::scalers::registry::Registry); a bad object is
//! reported with its name (and file and line for files) and never stops the others.

pub mod files;
pub mod kube;

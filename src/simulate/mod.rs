//! `ebb simulate`: replay a metric trace through the decisions ebb and the HPA make.

pub mod trace;

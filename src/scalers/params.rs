//! Typed trigger-metadata parsing with KEDA's rules (stub, being written).

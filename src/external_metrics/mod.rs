//! The external metrics API server (being written).

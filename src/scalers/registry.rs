//! Live scalers per ScaledObject trigger (being written).

//! Where ScaledObjects come from (being written).

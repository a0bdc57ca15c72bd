//! samgate

//! merkle (to be written)

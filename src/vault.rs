//! vault (to be written)

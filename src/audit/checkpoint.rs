//! checkpoint (to be written)

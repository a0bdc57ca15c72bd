//! pki (to be written)

//! pseudonym (to be written)

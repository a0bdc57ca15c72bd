//! personnummer (to be written)

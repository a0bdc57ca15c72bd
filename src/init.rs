//! Temporary stand-in until the pki branch lands.
use std::net::SocketAddr;
use std::path::Path;
/// Options.
#[derive(Debug, Clone)]
pub struct InitOptions { /// listen
 pub listen: SocketAddr, /// base port
 pub recipient_base_port: u16 }
impl Default for InitOptions { fn default() -> Self { Self { listen: SocketAddr::from(([127,0,0,1],8443)), recipient_base_port: 9101 } } }
/// Error.
#[derive(Debug, thiserror::Error)]
#[error("not yet")]
pub struct InitError;
/// Stand-in.
pub fn init(_dir: &Path, _o: &InitOptions) -> Result<(), InitError> { Err(InitError) }

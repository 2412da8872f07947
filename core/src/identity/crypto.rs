//! The one crypto provider weft uses (ring): keys, certificates and TLS all take it from
//! here, below every other identity module.
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// Passed explicitly to every configuration, so that whatever process-wide default another
/// crate installs makes no difference.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

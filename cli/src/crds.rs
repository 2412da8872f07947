//! `weftctl crds`: regenerate `deploy/crds/`.
use std::path::Path;

use anyhow::Context;

pub fn write(dir: &Path) -> anyhow::Result<()> {
    let written = weft_config::api::crds::write(dir)
        .with_context(|| format!("writing CRDs into {}", dir.display()))?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

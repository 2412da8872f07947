//! Where the objects come from. Every source produces the same [`Change`]s of the same
//! typed objects, so translation and validation do not know which one is running.
//!
//! A source runs as a task feeding a bounded channel; an applier task drains it, merges
//! what has queued up into one batch and applies it to the registry, so a burst of events
//! costs one snapshot.
pub mod dir;
mod feed;
pub mod kube;
pub mod yaml;

pub use self::dir::DirSource;
pub use self::feed::{Feed, Source, SourceError, SourceTask, error_chain, spawn};
pub use self::kube::{
    AGENT_WATCHED, CA_WATCHED, INGRESS_WATCHED, KubeSource, KubeSourceConfig, PodScope,
};
use crate::registry::Registry;

/// A registry filled by the directory source when `config_dir` is given, else by the
/// Kubernetes API, returned once the source's first complete view is in. Keep the task:
/// dropping it stops the source.
///
/// `kube.kinds` narrows what the Kubernetes API source requests (and so the RBAC it
/// needs); the directory source reads every kind its files hold, since reading local
/// files needs no grant, except Secrets: those only when `kube.kinds` has them, and only
/// of `kube.secrets_namespace` (or those `kube.secret_names` names), as the API source would
/// (a process that does not serve TLS holds no private key).
pub async fn start(
    settings: crate::translate::MeshSettings,
    config_dir: Option<&std::path::Path>,
    kube: KubeSourceConfig,
) -> Result<(Registry, SourceTask), SourceError> {
    // Checked here too (the source refuses it as well) so the caller gets this error
    // rather than the source's bare "ended before its first complete view".
    if config_dir.is_none() && kube.kinds.is_empty() {
        return Err(SourceError::NothingToWatch);
    }
    // Istio's mesh config lives in its own (the root) namespace.
    let kube = KubeSourceConfig {
        mesh_config_namespace: settings.root_namespace.clone(),
        ..kube
    };
    let registry = Registry::new(settings);
    let task = match config_dir {
        Some(dir) => spawn(
            &registry,
            DirSource::new(dir)
                .secrets(
                    kube.kinds
                        .contains(&crate::api::Kind::Secret)
                        .then(|| kube.secrets_namespace.clone()),
                )
                .secret_names(if kube.kinds.contains(&crate::api::Kind::Secret) {
                    kube.secret_names.clone()
                } else {
                    Vec::new()
                }),
        ),
        None => spawn(
            &registry,
            KubeSource::try_default().await?.with_config(kube),
        ),
    };
    task.ready().await?;
    Ok((registry, task))
}

//! VirtualService delegation, as pilot merges it (`pilot/pkg/model/virtualservice.go`,
//! `virtualservice_controller.go`): a root VirtualService's `http` rule naming a
//! `delegate` is replaced by the delegate's `http` rules, each under the root rule's
//! match conditions combined with its own. A delegate is a VirtualService without
//! `hosts`; one that does not exist (or has hosts, or is not exported to the root's
//! namespace) drops the root rule, so it matches nothing and the following rules are
//! tried. A delegate rule whose conditions conflict with the root's (not a subset of them)
//! is dropped.
use std::collections::HashMap;
use std::sync::Arc;

use crate::api::DEFAULT_NAMESPACE;
use crate::api::common::StringMatch;
use crate::api::networking::{Delegate, HttpMatchRequest, HttpRoute, VirtualService};

use super::export::visible;

/// Why a root rule's delegate cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// No VirtualService of that name.
    Missing,
    /// The VirtualService has hosts: it is a root, not a delegate.
    HasHosts,
    /// The delegate is not exported to the root's namespace.
    NotExported,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unusable::Missing => "does not exist",
            Unusable::HasHosts => "has hosts, so it is not a delegate",
            Unusable::NotExported => "is not exported to this VirtualService's namespace",
        })
    }
}

/// VirtualServices by (namespace, name), to find delegates.
pub struct Delegates<'a> {
    by_name: HashMap<(&'a str, &'a str), &'a VirtualService>,
    /// The mesh config's `defaultVirtualServiceExportTo`.
    export_default: &'a [String],
}

impl<'a> Delegates<'a> {
    pub fn new(
        virtual_services: impl IntoIterator<Item = &'a Arc<VirtualService>>,
        export_default: &'a [String],
    ) -> Self {
        let by_name = virtual_services
            .into_iter()
            .map(|vs| {
                let key = (
                    vs.metadata
                        .namespace
                        .as_deref()
                        .unwrap_or(DEFAULT_NAMESPACE),
                    vs.metadata.name.as_deref().unwrap_or_default(),
                );
                (key, &**vs)
            })
            .collect();
        Self {
            by_name,
            export_default,
        }
    }

    /// The delegate a rule of a VirtualService of `root_namespace` names.
    pub fn find(
        &self,
        delegate: &Delegate,
        root_namespace: &str,
    ) -> Result<&'a VirtualService, Unusable> {
        let namespace = delegate
            .namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(root_namespace);
        let vs = self
            .by_name
            .get(&(namespace, delegate.name.as_str()))
            .ok_or(Unusable::Missing)?;
        if !vs.spec.hosts.is_empty() {
            return Err(Unusable::HasHosts);
        }
        if !visible(
            &vs.spec.export_to,
            self.export_default,
            namespace,
            root_namespace,
        ) {
            return Err(Unusable::NotExported);
        }
        Ok(vs)
    }

    /// `vs` with its delegating rules replaced by the delegates' merged rules; `vs` itself
    /// (the same `Arc`) when it delegates nothing.
    pub fn merge(&self, vs: &Arc<VirtualService>) -> Arc<VirtualService> {
        if !vs.spec.http.iter().any(|r| r.delegate.is_some()) {
            return vs.clone();
        }
        let namespace = vs
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE);
        let mut merged = (**vs).clone();
        merged.spec.http = vs
            .spec
            .http
            .iter()
            .flat_map(|rule| match &rule.delegate {
                None => vec![rule.clone()],
                Some(delegate) => match self.find(delegate, namespace) {
                    Ok(found) => merge_http_routes(rule, &found.spec.http),
                    Err(_) => Vec::new(),
                },
            })
            .collect();
        Arc::new(merged)
    }
}

/// The delegate's rules under the root rule (`MergeHTTPRoutes`): each gets the root's
/// match conditions combined with its own, and the root's `rewrite`, `timeout`,
/// `retries`, `fault`, mirrors, `corsPolicy` and `headers` where it has none. A rule
/// whose conditions conflict with every root match is dropped.
pub fn merge_http_routes(root: &HttpRoute, delegate: &[HttpRoute]) -> Vec<HttpRoute> {
    delegate
        .iter()
        .filter_map(|rule| merge_http_route(root, rule))
        .collect()
}

fn merge_http_route(root: &HttpRoute, delegate: &HttpRoute) -> Option<HttpRoute> {
    let matches = merge_match_requests(&root.matches, &delegate.matches)?;
    let mut out = delegate.clone();
    out.matches = matches;
    out.name = match (&root.name, &delegate.name) {
        (Some(r), Some(d)) if !r.is_empty() && !d.is_empty() => Some(format!("{r}-{d}")),
        (r, None) => r.clone(),
        (_, d) => d.clone(),
    };
    fn inherit<T: Clone>(field: &mut Option<T>, root: &Option<T>) {
        if field.is_none() {
            field.clone_from(root);
        }
    }
    inherit(&mut out.rewrite, &root.rewrite);
    inherit(&mut out.direct_response, &root.direct_response);
    inherit(&mut out.timeout, &root.timeout);
    inherit(&mut out.retries, &root.retries);
    inherit(&mut out.fault, &root.fault);
    inherit(&mut out.mirror, &root.mirror);
    inherit(&mut out.mirror_percent, &root.mirror_percent);
    inherit(&mut out.mirror_percentage, &root.mirror_percentage);
    inherit(&mut out.cors_policy, &root.cors_policy);
    inherit(&mut out.headers, &root.headers);
    if out.mirrors.is_empty() {
        out.mirrors.clone_from(&root.mirrors);
    }
    Some(out)
}

/// The merged match list (`mergeHTTPMatchRequests`): each delegate match combined with
/// every root match it does not conflict with; `None` when a delegate match conflicts
/// with all of them.
fn merge_match_requests(
    root: &[HttpMatchRequest],
    delegate: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(delegate.to_vec());
    }
    if delegate.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for leaf in delegate {
        let mut found = false;
        for parent in root {
            if has_conflict(parent, leaf) {
                continue;
            }
            out.push(merge_match_request(parent, leaf));
            found = true;
        }
        if !found {
            return None;
        }
    }
    Some(out)
}

fn merge_match_request(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) if !r.is_empty() && !l.is_empty() => Some(format!("{r}-{l}")),
        (r, None) => r.clone(),
        (_, l) => l.clone(),
    };
    for (field, parent) in [
        (&mut out.uri, &root.uri),
        (&mut out.scheme, &root.scheme),
        (&mut out.method, &root.method),
        (&mut out.authority, &root.authority),
    ] {
        if field.is_none() {
            field.clone_from(parent);
        }
    }
    // The delegate's entries win over the root's of the same key (`maps.MergeCopy`).
    for (field, parent) in [
        (&mut out.headers, &root.headers),
        (&mut out.without_headers, &root.without_headers),
        (&mut out.query_params, &root.query_params),
    ] {
        for (key, value) in parent {
            field.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    for (key, value) in &root.source_labels {
        out.source_labels
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    if out.port.is_none_or(|p| p == 0) {
        out.port = root.port;
    }
    if out.source_namespace.as_deref().is_none_or(str::is_empty) {
        out.source_namespace.clone_from(&root.source_namespace);
    }
    if out.gateways.is_empty() {
        out.gateways.clone_from(&root.gateways);
    }
    if out.stat_prefix.as_deref().is_none_or(str::is_empty) {
        out.stat_prefix.clone_from(&root.stat_prefix);
    }
    out
}

/// Whether a delegate's match asks for something its root's match excludes (`hasConflict`).
fn has_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    for (roots, leaves) in [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ] {
        if leaves
            .iter()
            .any(|(key, l)| string_match_conflict(roots.get(key), Some(l)))
        {
            return true;
        }
    }
    if root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false) {
        return true;
    }
    let (root_port, leaf_port) = (root.port.unwrap_or(0), leaf.port.unwrap_or(0));
    if root_port > 0 && leaf_port > 0 && root_port != leaf_port {
        return true;
    }
    if let Some(ns) = root.source_namespace.as_deref().filter(|ns| !ns.is_empty())
        && leaf.source_namespace.as_deref() != Some(ns)
    {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|r| r != v))
    {
        return true;
    }
    if !root.gateways.is_empty()
        && !leaf.gateways.is_empty()
        && (root.gateways.len() < leaf.gateways.len()
            || leaf.gateways.iter().any(|g| !root.gateways.contains(g)))
    {
        return true;
    }
    false
}

/// `stringMatchConflict`: no conflict when either is unset; a regex conflicts with any
/// other kind; an exact root needs the same exact leaf; a prefix root needs a leaf
/// (prefix or exact) under it.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let any = |m: &StringMatch| set(&m.regex) || set(&m.prefix) || set(&m.exact);
    if set(&root.regex) && any(leaf) {
        return true;
    }
    if set(&leaf.regex) && any(root) {
        return true;
    }
    if let Some(exact) = root.exact.as_deref().filter(|e| !e.is_empty()) {
        return set(&leaf.prefix) || leaf.exact.as_deref().unwrap_or_default() != exact;
    }
    if let Some(prefix) = root.prefix.as_deref().filter(|p| !p.is_empty()) {
        if let Some(p) = leaf.prefix.as_deref().filter(|p| !p.is_empty()) {
            return !p.starts_with(prefix);
        }
        if let Some(e) = leaf.exact.as_deref().filter(|e| !e.is_empty()) {
            return !e.starts_with(prefix);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(yaml: &str) -> Arc<VirtualService> {
        Arc::new(serde_yaml::from_str(yaml).expect("VirtualService"))
    }

    const ROOT: &str = "metadata: {name: root, namespace: shop}\nspec:\n  hosts: [reviews]\n  http:\n  - name: api\n    match:\n    - uri: {prefix: /api}\n      headers: {x-team: {exact: blue}}\n    timeout: 3s\n    delegate: {name: api, namespace: team}\n  - name: gone\n    match:\n    - uri: {prefix: /gone}\n    delegate: {name: missing}\n  - route:\n    - destination: {host: reviews, subset: fallback}\n";

    const DELEGATE: &str = "metadata: {name: api, namespace: team}\nspec:\n  http:\n  - name: v2\n    match:\n    - uri: {prefix: /api/v2}\n      headers: {x-user: {exact: jason}}\n    route:\n    - destination: {host: reviews, subset: v2}\n    timeout: 1s\n  - match:\n    - uri: {prefix: /other}\n    route:\n    - destination: {host: reviews, subset: conflicting}\n  - route:\n    - destination: {host: reviews, subset: v1}\n";

    #[test]
    fn delegate_rules_take_the_root_match_and_unset_fields() {
        let all = [vs(ROOT), vs(DELEGATE)];
        let delegates = Delegates::new(&all, &[]);
        let merged = delegates.merge(&all[0]);
        let subsets: Vec<_> = merged
            .spec
            .http
            .iter()
            .map(|r| r.route[0].destination.subset.clone().unwrap_or_default())
            .collect();
        // `/other` is not under `/api`: dropped. The missing delegate drops its rule.
        assert_eq!(subsets, ["v2", "v1", "fallback"]);
        let v2 = &merged.spec.http[0];
        assert_eq!(v2.name.as_deref(), Some("api-v2"));
        assert_eq!(v2.timeout.as_deref(), Some("1s"), "the delegate's own wins");
        let m = &v2.matches[0];
        assert_eq!(
            m.uri.as_ref().and_then(|u| u.prefix.as_deref()),
            Some("/api/v2")
        );
        assert_eq!(
            m.headers.keys().collect::<Vec<_>>(),
            ["x-team", "x-user"],
            "the root's header condition and the delegate's"
        );
        let v1 = &merged.spec.http[1];
        assert_eq!(v1.timeout.as_deref(), Some("3s"), "inherited from the root");
        assert_eq!(
            v1.matches[0].uri.as_ref().and_then(|u| u.prefix.as_deref()),
            Some("/api"),
            "a delegate rule without match takes the root's"
        );
        assert!(merged.spec.http.iter().all(|r| r.delegate.is_none()));
    }

    #[test]
    fn unusable_delegates_are_told_apart() {
        let root = vs(ROOT);
        let with_hosts = vs(
            "metadata: {name: api, namespace: team}\nspec: {hosts: [x], http: [{route: [{destination: {host: x}}]}]}\n",
        );
        let private = vs(
            "metadata: {name: api, namespace: team}\nspec: {exportTo: ['.'], http: [{route: [{destination: {host: x}}]}]}\n",
        );
        let delegate = Delegate {
            name: "api".into(),
            namespace: Some("team".into()),
        };
        let all = [root.clone()];
        assert_eq!(
            Delegates::new(&all, &[]).find(&delegate, "shop").err(),
            Some(Unusable::Missing)
        );
        let all = [root.clone(), with_hosts];
        assert_eq!(
            Delegates::new(&all, &[]).find(&delegate, "shop").err(),
            Some(Unusable::HasHosts)
        );
        let all = [root.clone(), private];
        assert_eq!(
            Delegates::new(&all, &[]).find(&delegate, "shop").err(),
            Some(Unusable::NotExported)
        );
        // The mesh default applies to a delegate without exportTo.
        let all = [root, vs(DELEGATE)];
        let only_own = [".".to_string()];
        assert_eq!(
            Delegates::new(&all, &only_own)
                .find(&delegate, "shop")
                .err(),
            Some(Unusable::NotExported)
        );
    }

    #[test]
    fn string_match_conflicts_as_pilot_judges_them() {
        let m = |kind: &str, v: &str| {
            let mut s = StringMatch::default();
            match kind {
                "exact" => s.exact = Some(v.into()),
                "prefix" => s.prefix = Some(v.into()),
                _ => s.regex = Some(v.into()),
            }
            s
        };
        let c = |r: &StringMatch, l: &StringMatch| string_match_conflict(Some(r), Some(l));
        assert!(!c(&m("prefix", "/a"), &m("prefix", "/a/b")));
        assert!(c(&m("prefix", "/a/b"), &m("prefix", "/a")));
        assert!(!c(&m("prefix", "/a"), &m("exact", "/a/x")));
        assert!(!c(&m("exact", "/a"), &m("exact", "/a")));
        assert!(c(&m("exact", "/a"), &m("exact", "/b")));
        assert!(c(&m("exact", "/a"), &m("prefix", "/a")));
        assert!(c(&m("regex", ".*"), &m("prefix", "/a")));
        assert!(c(&m("prefix", "/a"), &m("regex", "/a.*")));
        assert!(!string_match_conflict(None, Some(&m("exact", "/x"))));
    }
}

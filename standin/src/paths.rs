//! URL paths of the Kubernetes API, parsed into routes.

use percent_encoding::percent_decode_str;

/// A resource URL, before it is checked against the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// What a path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/version`
    Version,
    /// `/healthz`, `/livez`, `/readyz`
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`
    ResourceList { group: String, version: String },
    /// Anything under a group version.
    Resource(ResourcePath),
    /// Not an API path.
    Unknown,
}

/// Parses a request path (without the query string).
pub(crate) fn parse(path: &str) -> Route {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["api", version] => Route::ResourceList { group: String::new(), version: version.to_string() },
        ["api", version, rest @ ..] => resource("", version, rest),
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group(group.to_string()),
        ["apis", group, version] => Route::ResourceList { group: group.to_string(), version: version.to_string() },
        ["apis", group, version, rest @ ..] => resource(group, version, rest),
        _ => Route::Unknown,
    }
}

fn resource(group: &str, version: &str, rest: &[&str]) -> Route {
    let path = |namespace: Option<&str>, plural: &str, name: Option<&str>, subresource: Option<&str>| {
        Route::Resource(ResourcePath {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: subresource.map(str::to_string),
        })
    };
    match rest {
        [plural] => path(None, plural, None, None),
        [plural, name] => path(None, plural, Some(name), None),
        // `/api/v1/namespaces/{ns}/status` is the namespace's subresource; any other third
        // segment is a collection inside the namespace.
        ["namespaces", name, sub @ ("status" | "finalize")] => path(None, "namespaces", Some(name), Some(sub)),
        ["namespaces", namespace, plural] => path(Some(namespace), plural, None, None),
        [plural, name, sub] => path(None, plural, Some(name), Some(sub)),
        ["namespaces", namespace, plural, name] => path(Some(namespace), plural, Some(name), None),
        ["namespaces", namespace, plural, name, sub] => path(Some(namespace), plural, Some(name), Some(sub)),
        _ => Route::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(group: &str, plural: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>) -> Route {
        Route::Resource(ResourcePath {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            namespace: namespace.map(Into::into),
            name: name.map(Into::into),
            subresource: sub.map(Into::into),
        })
    }

    #[test]
    fn parses_api_paths() {
        assert_eq!(parse("/version"), Route::Version);
        assert_eq!(parse("/api"), Route::CoreVersions);
        assert_eq!(parse("/apis"), Route::Groups);
        assert_eq!(parse("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(parse("/api/v1"), Route::ResourceList { group: "".into(), version: "v1".into() });
        assert_eq!(parse("/api/v1/namespaces"), rp("", "namespaces", None, None, None));
        assert_eq!(parse("/api/v1/namespaces/ns1"), rp("", "namespaces", None, Some("ns1"), None));
        assert_eq!(parse("/api/v1/namespaces/ns1/status"), rp("", "namespaces", None, Some("ns1"), Some("status")));
        assert_eq!(parse("/api/v1/namespaces/ns1/configmaps"), rp("", "configmaps", Some("ns1"), None, None));
        assert_eq!(
            parse("/apis/apps/v1/namespaces/ns1/deployments/web/scale"),
            rp("apps", "deployments", Some("ns1"), Some("web"), Some("scale"))
        );
        assert_eq!(parse("/apis/apps/v1/deployments"), rp("apps", "deployments", None, None, None));
        assert_eq!(parse("/metrics"), Route::Unknown);
    }
}

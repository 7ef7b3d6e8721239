//! Fault injection, controlled from tests at run time: latency, failing requests, 409
//! storms, dropped watches and expired watches. Every injected fault is noted in the
//! request log ([`crate::RequestRecord::fault`]).

use std::{sync::Arc, time::Duration};

use crate::{Shared, lock};

/// Which requests a fault applies to: an optional HTTP method, an optional substring of the
/// request path and an optional substring of the raw query string. The default matches
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    method: Option<String>,
    path_contains: Option<String>,
    query_contains: Option<String>,
}

impl Matcher {
    /// Matches every request.
    pub fn any() -> Self {
        Matcher::default()
    }

    /// Only requests with this HTTP method (`GET`, `PATCH`, ...; case-insensitive).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path contains this text (e.g. `/deployments/web/scale`).
    pub fn path_contains(mut self, text: &str) -> Self {
        self.path_contains = Some(text.to_string());
        self
    }

    /// Only requests whose raw query string contains this text (e.g. `watch=true`).
    pub fn query_contains(mut self, text: &str) -> Self {
        self.query_contains = Some(text.to_string());
        self
    }

    pub(crate) fn matches(&self, method: &str, path: &str, query: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.path_contains.as_deref().is_none_or(|p| path.contains(p))
            && self.query_contains.as_deref().is_none_or(|q| query.contains(q))
    }
}

/// Identifies one installed fault, for [`Faults::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

#[derive(Debug, Clone)]
enum Rule {
    Latency { matcher: Matcher, delay: Duration },
    Fail { matcher: Matcher, remaining: usize, code: u16 },
    ConflictStorm { matcher: Matcher, remaining: Option<usize> },
    ExpireWatch { matcher: Matcher, remaining: usize },
}

/// What fault handling decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Answer with this error code (`fail_next`).
    Fail(u16),
    /// Answer with a 409 optimistic-concurrency conflict.
    Conflict,
}

/// The installed faults of one server.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    rules: Vec<(FaultId, Rule)>,
    next_id: u64,
}

impl FaultState {
    fn add(&mut self, rule: Rule) -> FaultId {
        self.next_id += 1;
        let id = FaultId(self.next_id);
        self.rules.push((id, rule));
        id
    }

    /// The added latency for a request: the sum of all matching latency rules.
    pub fn latency(&self, method: &str, path: &str, query: &str) -> Duration {
        self.rules
            .iter()
            .filter_map(|(_, rule)| match rule {
                Rule::Latency { matcher, delay } if matcher.matches(method, path, query) => Some(*delay),
                _ => None,
            })
            .sum()
    }

    /// Consumes a matching failure rule, if any (first installed first).
    pub fn take_failure(&mut self, method: &str, path: &str, query: &str) -> Option<Injected> {
        let is_write = matches!(method, "POST" | "PUT" | "PATCH");
        let mut injected = None;
        for (_, rule) in &mut self.rules {
            match rule {
                Rule::Fail { matcher, remaining, code } if *remaining > 0 && matcher.matches(method, path, query) => {
                    *remaining -= 1;
                    injected = Some(Injected::Fail(*code));
                }
                Rule::ConflictStorm { matcher, remaining }
                    if is_write && remaining.is_none_or(|r| r > 0) && matcher.matches(method, path, query) =>
                {
                    if let Some(r) = remaining {
                        *r -= 1;
                    }
                    injected = Some(Injected::Conflict);
                }
                _ => continue,
            }
            break;
        }
        self.rules.retain(|(_, rule)| match rule {
            Rule::Fail { remaining, .. } | Rule::ExpireWatch { remaining, .. } => *remaining > 0,
            Rule::ConflictStorm { remaining, .. } => remaining.is_none_or(|r| r > 0),
            Rule::Latency { .. } => true,
        });
        injected
    }

    /// Consumes a matching watch-expiry rule, if any.
    pub fn take_watch_expiry(&mut self, path: &str, query: &str) -> bool {
        let hit = self.rules.iter_mut().any(|(_, rule)| match rule {
            Rule::ExpireWatch { matcher, remaining } if *remaining > 0 && matcher.matches("GET", path, query) => {
                *remaining -= 1;
                true
            }
            _ => false,
        });
        self.rules.retain(|(_, rule)| !matches!(rule, Rule::ExpireWatch { remaining: 0, .. }));
        hit
    }
}

/// Run-time fault injection for one server. Cheap to clone; see [`crate::StandIn::faults`].
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

impl Faults {
    fn add(&self, rule: Rule) -> FaultId {
        lock(&self.shared.faults).add(rule)
    }

    /// Delays every matching request by `delay` before it is handled (delays of several
    /// matching rules add up). Stays until removed.
    pub fn add_latency(&self, matcher: Matcher, delay: Duration) -> FaultId {
        self.add(Rule::Latency { matcher, delay })
    }

    /// Answers the next `times` matching requests with a `Status` error of `code` (500, 503,
    /// 409, 429, ...) instead of handling them.
    pub fn fail_next(&self, matcher: Matcher, times: usize, code: u16) -> FaultId {
        self.add(Rule::Fail { matcher, remaining: times, code })
    }

    /// A "409 storm": every matching write (POST, PUT, PATCH) gets a 409 `Conflict` ("the
    /// object has been modified") until removed, or `times` times if given.
    pub fn conflict_storm(&self, matcher: Matcher, times: Option<usize>) -> FaultId {
        self.add(Rule::ConflictStorm { matcher, remaining: times })
    }

    /// The next `times` matching watch requests get an `ERROR` event with a 410 `Expired`
    /// Status (as for a too-old resourceVersion) and end, which makes a kube-runtime watcher
    /// re-list. Match on the path, e.g. `Matcher::any().path_contains("/deployments")`.
    pub fn expire_next_watches(&self, matcher: Matcher, times: usize) -> FaultId {
        self.add(Rule::ExpireWatch { matcher, remaining: times })
    }

    /// Ends every open watch connection abruptly now (the chunked response is cut off, as
    /// when a load balancer or the API server drops it). Returns how many were open.
    pub fn drop_watches(&self) -> usize {
        let open = self.shared.watch_epoch.receiver_count();
        self.shared.watch_epoch.send_modify(|epoch| *epoch += 1);
        open
    }

    /// Removes one fault.
    pub fn remove(&self, id: FaultId) {
        lock(&self.shared.faults).rules.retain(|(i, _)| *i != id);
    }

    /// Removes all faults.
    pub fn clear(&self) {
        lock(&self.shared.faults).rules.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_and_count_down() {
        let mut state = FaultState::default();
        state.add(Rule::Fail {
            matcher: Matcher::any().method("get").path_contains("/configmaps"),
            remaining: 2,
            code: 503,
        });
        state.add(Rule::ConflictStorm { matcher: Matcher::any().path_contains("/scale"), remaining: Some(1) });
        state.add(Rule::Latency { matcher: Matcher::any(), delay: Duration::from_millis(5) });
        assert_eq!(state.take_failure("GET", "/api/v1/namespaces/a/configmaps", ""), Some(Injected::Fail(503)));
        assert_eq!(state.take_failure("POST", "/api/v1/namespaces/a/configmaps", ""), None);
        assert_eq!(state.take_failure("GET", "/api/v1/namespaces/a/configmaps", ""), Some(Injected::Fail(503)));
        assert_eq!(state.take_failure("GET", "/api/v1/namespaces/a/configmaps", ""), None);
        assert_eq!(state.take_failure("GET", "/x/scale", ""), None);
        assert_eq!(state.take_failure("PATCH", "/x/scale", ""), Some(Injected::Conflict));
        assert_eq!(state.take_failure("PATCH", "/x/scale", ""), None);
        assert_eq!(state.latency("GET", "/", ""), Duration::from_millis(5));
        assert_eq!(state.rules.len(), 1);
    }
}

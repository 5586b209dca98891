//! What doveauth counts: lookups, accounts created, first logins refused
//! by rule, and internal errors.

use chatmail_metrics::prometheus_client::metrics::counter::Counter;
use chatmail_metrics::prometheus_client::metrics::family::Family;
use chatmail_metrics::prometheus_client::registry::Registry;

use crate::policy::Refusal;

type Labels = [(&'static str, &'static str); 1];

/// Clones share the counts; until [`AuthMetrics::register`] they count
/// without being served.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    lookups: Family<Labels, Counter>,
    pub accounts_created: Counter,
    refused: Family<Labels, Counter>,
    pub internal_errors: Counter,
}

impl AuthMetrics {
    #[must_use]
    pub fn new() -> Self {
        let metrics = Self::default();
        for kind in ["userdb", "passdb", "other"] {
            let _ = metrics.lookups.get_or_create(&[("kind", kind)]);
        }
        for rule in Refusal::RULES {
            let _ = metrics.refused.get_or_create(&[("rule", rule)]);
        }
        metrics
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "doveauth_lookups",
            "Dict lookups by Dovecot, by kind (userdb, passdb, other)",
            self.lookups.clone(),
        );
        registry.register(
            "doveauth_accounts_created",
            "Accounts created at their first login",
            self.accounts_created.clone(),
        );
        registry.register(
            "doveauth_registrations_refused",
            "First logins that created no account, by the rule that refused them",
            self.refused.clone(),
        );
        registry.register(
            "doveauth_internal_errors",
            "Lookups answered with a failure because of our own error (disk, system)",
            self.internal_errors.clone(),
        );
    }

    pub fn lookup(&self, kind: &'static str) {
        self.lookups.get_or_create(&[("kind", kind)]).inc();
    }

    pub fn refused(&self, refusal: &Refusal) {
        self.refused
            .get_or_create(&[("rule", refusal.rule())])
            .inc();
    }

    /// The count of lookups of `kind` (userdb, passdb, other).
    #[must_use]
    pub fn lookups_of(&self, kind: &'static str) -> u64 {
        self.lookups.get_or_create(&[("kind", kind)]).get()
    }

    /// The count of refusals by `rule` (see [`Refusal::RULES`]).
    #[must_use]
    pub fn refused_by(&self, rule: &'static str) -> u64 {
        self.refused.get_or_create(&[("rule", rule)]).get()
    }
}

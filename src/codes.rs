//! Closed sets of codes — decisions, allow reasons — and the `codes!` macro that declares each such
//! set once: the enum, its stable `code()` and an exhaustive `ALL`. Metric registries, response
//! tables and audit records are built from the types, so no hand-kept string list can drift from them.

/// `codes! { /// doc  pub enum Name { Variant => "code", … } }`
macro_rules! codes {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $variant:ident => $code:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vm])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable code: a metric label value, the audit field, the response `code`.
            pub fn code(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.code())
            }
        }
    };
}
pub(crate) use codes;

codes! {
    /// What happened to a request: the metric `outcome` label and the audit record's `decision`.
    pub enum Decision {
        Allow => "allow",
        Deny => "deny",
        /// Shadow mode: enforce would have allowed.
        WouldAllow => "would_allow",
        /// Shadow mode: enforce would have denied.
        WouldDeny => "would_deny",
    }
}

/// Fails closed: a plan nobody decided is a denial.
impl Default for Decision {
    fn default() -> Self {
        Decision::Deny
    }
}

codes! {
    /// Why a request was allowed (the `reason` label on allows).
    pub enum AllowReason {
        /// A valid token.
        Ok => "ok",
        /// `allow_missing` and no token.
        Anonymous => "anonymous",
        /// A rule without a requirement, or mode `off`.
        Public => "public",
        /// Keys unavailable, and the rule opted into `degraded`.
        Degraded => "degraded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case() {
        let mut all: Vec<&str> = Decision::ALL.iter().map(|d| d.code()).collect();
        all.extend(AllowReason::ALL.iter().map(|r| r.code()));
        for c in &all {
            assert!(
                c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{c}"
            );
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}

//! Why a request was denied: one closed enum whose `code()` is stable. The code names the reason in the
//! response body, the logs and (later) metric labels and audit records, so codes never change meaning.

use std::fmt;

use crate::codes::codes;

codes! {
    /// A denial's reason without its detail: the `reason` label of the deny counters and the audit
    /// record, and the response body's `code`. `Denial::reason` maps every denial onto one.
    pub enum Reason {
        Missing => "missing",
        InvalidRequest => "invalid_request",
        Malformed => "malformed",
        Oversized => "oversized",
        AlgNotAllowed => "alg_not_allowed",
        ForbiddenHeader => "forbidden_header",
        UnknownKid => "unknown_kid",
        KeyMismatch => "key_mismatch",
        BadSignature => "bad_signature",
        Expired => "expired",
        NotYetValid => "not_yet_valid",
        MissingExp => "missing_exp",
        WrongIssuer => "wrong_issuer",
        WrongAudience => "wrong_audience",
        WrongSubject => "wrong_subject",
        WrongType => "wrong_type",
        MissingIat => "missing_iat",
        LifetimeTooLong => "lifetime_too_long",
        InsufficientScope => "insufficient_scope",
        ClaimMismatch => "claim_mismatch",
        InvalidDpopProof => "invalid_dpop_proof",
        DpopReplay => "dpop_replay",
        DpopBinding => "dpop_binding",
        MtlsBinding => "mtls_binding",
        BindingRequired => "binding_required",
        KeysUnavailable => "keys_unavailable",
        NoRule => "no_rule",
        Internal => "internal_error",
    }
}

impl Reason {
    /// Reasons a request under a rule can be denied for (every one but `no_rule`).
    pub fn under_a_rule() -> impl Iterator<Item = Reason> {
        Reason::ALL.iter().copied().filter(|r| *r != Reason::NoRule)
    }

    /// Reasons counted under the `no_rule` route: no rule matched, the host failed us before one was
    /// chosen, or the request was refused before rule selection (a bad `Host`, two tokens).
    pub const WITHOUT_A_RULE: [Reason; 3] =
        [Reason::NoRule, Reason::Internal, Reason::InvalidRequest];
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No token in any configured location.
    Missing,
    /// The request itself is unusable (RFC 6750 §3.1 `invalid_request`): more than one token
    /// presented, or a `Host` that is not a host name where host rules decide.
    InvalidRequest(&'static str),
    /// Not a compact JWS: segment count, base64url, JSON, non-ASCII bytes, types of standard claims.
    Malformed(&'static str),
    /// Larger than the provider's `max_token_bytes`.
    Oversized,
    /// `alg` is `none`, HMAC, unknown, or not in the provider's allow-list.
    AlgNotAllowed,
    /// A header the filter refuses by policy: `jku`, `jwk`, `x5u`, `x5c`, or any `crit`.
    ForbiddenHeader(&'static str),
    /// No key with the token's `kid` (or, without `kid`, none that fits the algorithm).
    UnknownKid,
    /// A key with that `kid` exists but its type or `alg` does not fit the token's algorithm.
    KeyMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    /// `exp` absent while the provider requires it.
    MissingExp,
    /// `iss` absent or not the issuer of any provider the rule accepts.
    WrongIssuer,
    /// `aud` absent or none of its values is allowed.
    WrongAudience,
    /// `sub` absent or fits none of the provider's `subjects`.
    WrongSubject,
    /// The header's `typ` is absent or not one of the provider's `allowed_types` (an ID token
    /// used as an access token, say).
    WrongType,
    /// `iat` absent while the provider's `max_lifetime` needs it.
    MissingIat,
    /// `exp - iat` exceeds the provider's `max_lifetime`.
    LifetimeTooLong,
    /// The token lacks a scope the rule requires (403, RFC 6750 `insufficient_scope`). Carries the
    /// rule's required scopes, from config, for the `scope` attribute of the challenge.
    InsufficientScope(String),
    /// A claim the rule requires is absent or has a value the rule does not allow.
    ClaimMismatch,
    /// The `DPoP` proof is missing, repeated, malformed or does not fit the request (RFC 9449 §4.3):
    /// `401` with a `DPoP` challenge, `error="invalid_dpop_proof"`.
    InvalidDpopProof(&'static str),
    /// The proof's `jti` was seen within the window (RFC 9449 §11.1).
    DpopReplay,
    /// A DPoP-bound token without its binding: presented as Bearer, or a proof for another key
    /// (`cnf.jkt`), or an unbound token where the route needs DPoP: `401 invalid_token`.
    DpopBinding(&'static str),
    /// An mTLS-bound token (`cnf["x5t#S256"]`, RFC 8705 §3) without the client certificate it names,
    /// or an unbound token where the route needs mTLS: `401 invalid_token`.
    MtlsBinding(&'static str),
    /// The route needs a sender-constrained token (`binding: any`) and this one is not.
    BindingRequired,
    /// No key set could be had in time (IdP down, slow, or returning garbage).
    KeysUnavailable,
    /// The request matched no rule; the filter fails closed.
    NoRule,
    /// The host refused a call the filter needs (e.g. reading or removing headers): fail closed.
    Internal,
}

impl Denial {
    /// The reason, without the detail.
    pub fn reason(&self) -> Reason {
        match self {
            Denial::Missing => Reason::Missing,
            Denial::InvalidRequest(_) => Reason::InvalidRequest,
            Denial::Malformed(_) => Reason::Malformed,
            Denial::Oversized => Reason::Oversized,
            Denial::AlgNotAllowed => Reason::AlgNotAllowed,
            Denial::ForbiddenHeader(_) => Reason::ForbiddenHeader,
            Denial::UnknownKid => Reason::UnknownKid,
            Denial::KeyMismatch => Reason::KeyMismatch,
            Denial::BadSignature => Reason::BadSignature,
            Denial::Expired => Reason::Expired,
            Denial::NotYetValid => Reason::NotYetValid,
            Denial::MissingExp => Reason::MissingExp,
            Denial::WrongIssuer => Reason::WrongIssuer,
            Denial::WrongAudience => Reason::WrongAudience,
            Denial::WrongSubject => Reason::WrongSubject,
            Denial::WrongType => Reason::WrongType,
            Denial::MissingIat => Reason::MissingIat,
            Denial::LifetimeTooLong => Reason::LifetimeTooLong,
            Denial::InsufficientScope(_) => Reason::InsufficientScope,
            Denial::ClaimMismatch => Reason::ClaimMismatch,
            Denial::InvalidDpopProof(_) => Reason::InvalidDpopProof,
            Denial::DpopReplay => Reason::DpopReplay,
            Denial::DpopBinding(_) => Reason::DpopBinding,
            Denial::MtlsBinding(_) => Reason::MtlsBinding,
            Denial::BindingRequired => Reason::BindingRequired,
            Denial::KeysUnavailable => Reason::KeysUnavailable,
            Denial::NoRule => Reason::NoRule,
            Denial::Internal => Reason::Internal,
        }
    }

    /// Stable machine-readable reason code.
    pub fn code(&self) -> &'static str {
        self.reason().code()
    }

    /// Fixed human-readable description. Never contains request data, so it is safe in a response
    /// header and in logs.
    pub fn description(&self) -> &'static str {
        match self {
            Denial::Missing => "no bearer token",
            Denial::InvalidRequest(what) => what,
            Denial::Malformed(what) => what,
            Denial::Oversized => "token too large",
            Denial::AlgNotAllowed => "algorithm not allowed",
            Denial::ForbiddenHeader(what) => what,
            Denial::UnknownKid => "no key for this token",
            Denial::KeyMismatch => "key does not fit the token algorithm",
            Denial::BadSignature => "signature verification failed",
            Denial::Expired => "token expired",
            Denial::NotYetValid => "token not yet valid",
            Denial::MissingExp => "token has no exp",
            Denial::WrongIssuer => "issuer not accepted",
            Denial::WrongAudience => "audience not accepted",
            Denial::WrongSubject => "subject not accepted",
            Denial::WrongType => "token type not accepted",
            Denial::MissingIat => "token has no iat",
            Denial::LifetimeTooLong => "token lifetime exceeds the maximum",
            Denial::InsufficientScope(_) => "token lacks a required scope",
            Denial::ClaimMismatch => "required claim missing or not allowed",
            Denial::InvalidDpopProof(what) => what,
            Denial::DpopReplay => "DPoP proof replayed",
            Denial::DpopBinding(what) => what,
            Denial::MtlsBinding(what) => what,
            Denial::BindingRequired => "a sender-constrained token is required",
            Denial::KeysUnavailable => "signing keys unavailable",
            Denial::NoRule => "no rule matches this request",
            Denial::Internal => "the filter could not process this request",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.description())
    }
}

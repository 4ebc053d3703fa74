//! What the server accepts, stated in the OpenAPI document: a client generated from
//! `/v1/openapi.json` must send nothing the server refuses for a reason the document
//! does not say. Each input kind of the API (a client id, an amount, a reason, a
//! user id …) is one named schema here, built from the domain's own limits
//! (`tally_domain::values`), and the request bodies and parameters refer to it
//! (`#[schema(value_type = IdText)]`, `("hold_id" = IdText, Path)`), so a limit
//! changed in the domain changes the document with it.
//!
//! The configuration's part (hold TTL bounds, the plan catalog) is stated by the
//! document a running server serves ([`for_deployment`]); the static document
//! (`tally_api::openapi()`) states the defaults.
//!
//! What OpenAPI cannot state, the route's description says: `at` and `at_position`
//! exclude each other; a capture beyond the hold (422 `capture_exceeds_hold`) and a
//! refund the log does not allow (422 `refund_not_allowed`) depend on the ledger's
//! state.

use std::borrow::Cow;

use tally_domain::Config;
use tally_domain::slot::{
    ATTEMPT_ID_BYTES_MAX, CONTENT_CHARS_MAX, DESTINATIONS_MAX, ERROR_KIND_BYTES_MAX,
};
use tally_domain::values::{AMOUNT_MAX, AMOUNT_SCALE_MAX, ID_BYTES_MAX, REASON_CHARS_MAX};
use utoipa::openapi::schema::{
    ArrayBuilder, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{KnownFormat, OpenApi, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// The regex class of the characters a free text may hold (the complement of
/// [`tally_domain::values::is_forbidden_char`]), for `pattern`s.
const TEXT_CHAR: &str = r"[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]";

/// A text that has at least one character that is not white space and none that
/// [`tally_domain::values::is_forbidden_char`] refuses.
fn text_pattern() -> String {
    format!(r"^{TEXT_CHAR}*[^\s\u0000-\u001F\u007F-\u009F]{TEXT_CHAR}*$")
}

/// The digits of the integer part of [`AMOUNT_MAX`].
fn amount_max_digits() -> usize {
    AMOUNT_MAX.trunc().to_string().len()
}

/// A positive amount of at most [`AMOUNT_SCALE_MAX`] places, at most [`AMOUNT_MAX`]
/// (which is a power of ten: its own digits are written out).
fn amount_pattern() -> String {
    let below = amount_max_digits() - 1;
    let places = AMOUNT_SCALE_MAX;
    let max = AMOUNT_MAX.trunc();
    format!(
        r"^([1-9][0-9]{{0,{}}}(\.[0-9]{{1,{places}}})?|0\.(0[1-9]|[1-9][0-9]?)|{max}(\.0{{1,{places}}})?)$",
        below - 1
    )
}

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .description(Some(description))
}

fn done(object: ObjectBuilder) -> RefOr<Schema> {
    RefOr::T(Schema::Object(object.build()))
}

macro_rules! constraint {
    ($(#[$doc:meta])* $name:ident => $schema:expr) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

constraint!(
    /// A client-chosen id (hold, debit, grant, adjustment, payment, refund, slot).
    IdText => done(
        string(&format!(
            "1 to {ID_BYTES_MAX} of `A-Z a-z 0-9 _ - . :`"
        ))
        .min_length(Some(1))
        .max_length(Some(ID_BYTES_MAX))
        .pattern(Some(format!("^[A-Za-z0-9_.:-]{{1,{ID_BYTES_MAX}}}$")))
        .examples(["job-42"])
    )
);

constraint!(
    /// A low-balance alert's threshold: credits, `off` or `default`.
    AlertThresholdText => done(
        string("a positive decimal string of credits (`\"10\"`), `off`, or `default` (the configured one)")
            .pattern(Some(format!("^(off|default|{})$", &amount_pattern()[1..amount_pattern().len() - 1])))
            .examples(["10"])
    )
);

constraint!(
    /// An event type a webhook endpoint wants, or a family of them.
    EventTypeText => done(
        string("an event type of the log (`payment.succeeded`, `balance.low`), a family (`credits.*`) or `*`")
            .min_length(Some(1))
            .max_length(Some(64))
            .pattern(Some(r"^(\*|[a-z0-9_.]*\.\*|[a-z0-9_.]+)$"))
            .examples(["payment.succeeded"])
    )
);

constraint!(
    /// Where a payer returns from a provider's pay page.
    ReturnUrlText => done(
        string("an http(s) URL of at most 2048 characters")
            .max_length(Some(2048))
            .pattern(Some(r"^https?://\S{1,2040}$"))
            .examples(["https://t.me/your_bot"])
    )
);

constraint!(
    /// A payer's e-mail address.
    EmailText => done(
        string("an e-mail address of at most 254 characters")
            .max_length(Some(254))
            .pattern(Some(r"^[^\s@]{1,64}@[^\s@]{1,189}$"))
            .examples(["payer@example.com"])
    )
);

constraint!(
    /// Credits or money: a positive decimal string.
    AmountText => done(
        string(&format!(
            "a decimal string, more than 0 and at most {AMOUNT_MAX}, with at most \
             {AMOUNT_SCALE_MAX} decimal places (`\"5\"`, `\"5.25\"`)"
        ))
        .pattern(Some(amount_pattern()))
        .examples(["5.00"])
    )
);

constraint!(
    /// An admin's signed adjustment: a non-zero decimal string.
    SignedAmountText => done(
        string(&format!(
            "a decimal string, not 0, at most {AMOUNT_MAX} either way, with at most \
             {AMOUNT_SCALE_MAX} decimal places (`\"-3.50\"`, `\"10\"`)"
        ))
        .pattern(Some(format!("^-?{}", &amount_pattern()[1..])))
        .examples(["-3.50"])
    )
);

constraint!(
    /// Why: not blank, at most [`REASON_CHARS_MAX`] characters.
    ReasonText => done(
        string(&format!(
            "not blank, at most {REASON_CHARS_MAX} characters, no control characters \
             other than tab and newline"
        ))
        .min_length(Some(1))
        .max_length(Some(REASON_CHARS_MAX))
        .pattern(Some(text_pattern()))
        .examples(["image job"])
    )
);

constraint!(
    /// A Telegram user id.
    UserIdNumber => done(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .description(Some("a Telegram user id: a positive 64-bit integer"))
            .minimum(Some(1))
            .examples([42])
    )
);

constraint!(
    /// A Telegram chat id: any 64-bit integer but 0 (channels and groups are negative).
    ChatIdNumber => done(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .description(Some("a Telegram chat id (negative for groups and channels)"))
            .examples([-1001234567890_i64])
    )
);

constraint!(
    /// A position in the log a read may wait for.
    PositionNumber => done(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .description(Some(
                "a position of the log (a write's `position`); one beyond the log's last \
                 event is 409 `position_beyond_log`",
            ))
            .minimum(Some(0))
            .maximum(Some(i64::MAX))
    )
);

constraint!(
    /// A posting cycle.
    CycleNumber => done(
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .description(Some("a posting cycle (the poster's round number)"))
            .minimum(Some(0))
            .maximum(Some(i64::MAX))
    )
);

constraint!(
    /// Where a refund request stands.
    RefundState => done(
        string("`requested`, `approved` or `rejected`")
            .enum_values(Some(["requested", "approved", "rejected"]))
    )
);

constraint!(
    /// A moment, RFC 3339.
    TimeText => done(
        string("an RFC 3339 time like 2026-11-21T12:00:00Z")
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
    )
);

constraint!(
    /// A day, `YYYY-MM-DD`.
    DayText => done(
        string("a day like 2026-11-21")
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
    )
);

constraint!(
    /// A slot's post text.
    ContentText => done(
        string(&format!(
            "the post's text: not blank, at most {CONTENT_CHARS_MAX} characters"
        ))
        .min_length(Some(1))
        .max_length(Some(CONTENT_CHARS_MAX))
        .pattern(Some(text_pattern()))
    )
);

constraint!(
    /// A post attempt's error class.
    ErrorKindText => done(
        string(&format!(
            "a short class name: 1 to {ERROR_KIND_BYTES_MAX} letters, digits or `_-.:` \
             (rate_limited, chat_not_found)"
        ))
        .min_length(Some(1))
        .max_length(Some(ERROR_KIND_BYTES_MAX))
        .pattern(Some(format!("^[A-Za-z0-9_.:-]{{1,{ERROR_KIND_BYTES_MAX}}}$")))
    )
);

constraint!(
    /// A name from a provider (a provider, a currency, a provider's charge id).
    ProviderText => done(
        string(&format!(
            "not blank, at most {} characters",
            tally_domain::payment::PROVIDER_ID_BYTES_MAX
        ))
        .min_length(Some(1))
        .max_length(Some(tally_domain::payment::PROVIDER_ID_BYTES_MAX))
        .pattern(Some(format!(
            "^[\\x21-\\x7E]{{1,{}}}$",
            tally_domain::payment::PROVIDER_ID_BYTES_MAX
        )))
    )
);

constraint!(
    /// What a refund gives back: a captured hold or a debit.
    SpendReference => done(
        string("the spend to refund: `hold:<hold_id>` (a captured hold) or `debit:<debit_id>`")
            .min_length(Some(6))
            .max_length(Some(ID_BYTES_MAX + 6))
            .pattern(Some(format!("^(hold|debit):[A-Za-z0-9_.:-]{{1,{ID_BYTES_MAX}}}$")))
            .examples(["hold:job-42"])
    )
);

constraint!(
    /// A post attempt's id, chosen by the poster.
    AttemptIdText => done(
        string(&format!(
            "the poster's id of the attempt: 1 to {ATTEMPT_ID_BYTES_MAX} visible characters"
        ))
        .min_length(Some(1))
        .max_length(Some(ATTEMPT_ID_BYTES_MAX))
        .pattern(Some(format!("^[\\x21-\\x7E]{{1,{ATTEMPT_ID_BYTES_MAX}}}$")))
    )
);

/// Longest Telegram username or language tag an account is opened with.
pub(crate) const PROFILE_TEXT_CHARS_MAX: usize = 64;

constraint!(
    /// A Telegram username or language tag.
    ProfileText => done(
        string(&format!(
            "at most {PROFILE_TEXT_CHARS_MAX} characters, no control characters"
        ))
        .max_length(Some(PROFILE_TEXT_CHARS_MAX))
        .pattern(Some(format!("^{TEXT_CHAR}*$")))
    )
);

constraint!(
    /// A plan of the catalog.
    PlanName => done(plan_name(&Config::default()))
);

constraint!(
    /// A hold's time to live.
    TtlSeconds => done(ttl_seconds(&Config::default()))
);

constraint!(
    /// Where a slot posts: 1 to [`DESTINATIONS_MAX`] chats, no duplicates.
    DestinationList => RefOr::T(Schema::Array(
        ArrayBuilder::new()
            .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("DestinationBody")))
            .min_items(Some(1))
            .max_items(Some(DESTINATIONS_MAX))
            .unique_items(true)
            .description(Some(format!("1 to {DESTINATIONS_MAX} destinations, no duplicates")))
            .build(),
    ))
);

fn plan_name(config: &Config) -> ObjectBuilder {
    let plans: Vec<String> = config.plans.keys().map(|p| p.to_string()).collect();
    string("a plan of the catalog").enum_values(Some(plans))
}

fn ttl_seconds(config: &Config) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Integer))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .description(Some(format!(
            "seconds until the hold expires and its credits return: {} to {}",
            config.hold_ttl_seconds_min, config.hold_ttl_seconds_max
        )))
        .minimum(Some(config.hold_ttl_seconds_min))
        .maximum(Some(config.hold_ttl_seconds_max))
}

/// The input schemas every document carries (named, so bodies and parameters refer
/// to them).
pub(crate) fn register(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    let mut add = |name: Cow<'static, str>, schema: RefOr<Schema>| {
        components.schemas.insert(name.into_owned(), schema);
    };
    add(IdText::name(), IdText::schema());
    add(AmountText::name(), AmountText::schema());
    add(ReturnUrlText::name(), ReturnUrlText::schema());
    add(EventTypeText::name(), EventTypeText::schema());
    add(AlertThresholdText::name(), AlertThresholdText::schema());
    add(EmailText::name(), EmailText::schema());
    add(SignedAmountText::name(), SignedAmountText::schema());
    add(ReasonText::name(), ReasonText::schema());
    add(UserIdNumber::name(), UserIdNumber::schema());
    add(ChatIdNumber::name(), ChatIdNumber::schema());
    add(PositionNumber::name(), PositionNumber::schema());
    add(TimeText::name(), TimeText::schema());
    add(DayText::name(), DayText::schema());
    add(ContentText::name(), ContentText::schema());
    add(ErrorKindText::name(), ErrorKindText::schema());
    add(ProviderText::name(), ProviderText::schema());
    add(PlanName::name(), PlanName::schema());
    add(TtlSeconds::name(), TtlSeconds::schema());
    add(DestinationList::name(), DestinationList::schema());
    add(SpendReference::name(), SpendReference::schema());
    add(AttemptIdText::name(), AttemptIdText::schema());
    add(ProfileText::name(), ProfileText::schema());
    add(CycleNumber::name(), CycleNumber::schema());
    add(RefundState::name(), RefundState::schema());
}

/// The document as this deployment enforces it: the configured hold TTL bounds and
/// plan catalog replace the defaults.
pub(crate) fn for_deployment(openapi: &mut OpenApi, config: &Config) {
    let components = openapi.components.get_or_insert_with(Default::default);
    let object = |b: ObjectBuilder| -> RefOr<Schema> { RefOr::T(Schema::Object(b.build())) };
    components
        .schemas
        .insert(PlanName::name().into_owned(), object(plan_name(config)));
    components
        .schemas
        .insert(TtlSeconds::name().into_owned(), object(ttl_seconds(config)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_amount_pattern_follows_the_domain_limits() {
        let pattern = amount_pattern();
        assert_eq!(
            pattern,
            r"^([1-9][0-9]{0,8}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?)|1000000000(\.0{1,2})?)$"
        );
        assert_eq!(amount_max_digits(), 10);
    }
}

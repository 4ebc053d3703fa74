//! Every word the bot says, in one place per language.
//!
//! Handlers name what they want to say ([`Text`]) and never spell it; [`Lang::say`]
//! turns it into English or Russian. Adding a language is adding one function here.
//!
//! One file: every text in every language side by side, so a translator edits one file
//! and a missing translation is seen.

use rust_decimal::Decimal;

/// A language the bot speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// English (the default).
    En,
    /// Russian.
    Ru,
}

impl Lang {
    /// The language for Telegram's `language_code` (`ru`, `ru-RU` → Russian; anything
    /// else, or none, → English).
    pub fn from_code(code: Option<&str>) -> Self {
        match code {
            Some(code) if code.to_ascii_lowercase().starts_with("ru") => Lang::Ru,
            _ => Lang::En,
        }
    }

    /// The code stored for this language.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    /// The text in this language.
    pub fn say(self, text: Text<'_>) -> String {
        match self {
            Lang::En => en(text),
            Lang::Ru => ru(text),
        }
    }
}

/// Credits as the bot shows them: two decimals.
pub fn credits(amount: Decimal) -> String {
    format!("{:.2}", amount.round_dp(2))
}

/// One statement line as the bot shows it.
pub struct Entry {
    /// `deposit`, `grant`, `debit` …
    pub kind: String,
    /// Signed change of the available credits.
    pub amount: Decimal,
    /// Available after it.
    pub balance_after: Decimal,
    /// When, as `YYYY-MM-DD HH:MM`.
    pub at: String,
}

/// Everything the bot can say. A variant's fields are the values its text fills in,
/// named as they read in the text (so they carry no docs of their own).
#[allow(missing_docs)]
pub enum Text<'a> {
    /// Greeting after `/start`.
    Welcome {
        name: &'a str,
        available: Decimal,
        held: Decimal,
    },
    /// `/balance`.
    Balance {
        available: Decimal,
        held: Decimal,
    },
    /// `/history` page header; entries follow.
    History {
        page: usize,
        entries: &'a [Entry],
    },
    /// `/history` with nothing in it.
    HistoryEmpty,
    /// `/topup`: pick a pack.
    TopupChoose,
    /// A pack's button.
    PackButton {
        credits: Decimal,
        price: Decimal,
        currency: &'a str,
    },
    /// Asks how to pay, when more than one provider is configured.
    PayChoose,
    /// A way to pay: the provider and the price in its currency.
    PayWith {
        provider: &'a str,
        price: Decimal,
        currency: &'a str,
    },
    /// The pay link of a provider's invoice.
    PayLink {
        provider: &'a str,
        price: Decimal,
        currency: &'a str,
    },
    /// The button that opens a provider's pay page.
    PayButton,
    /// The provider could not make the invoice; try again or another way.
    PayUnavailable {
        provider: &'a str,
    },
    /// The invoice title for a pack.
    PackTitle {
        credits: Decimal,
    },
    /// The invoice description for a pack.
    PackDescription {
        credits: Decimal,
    },
    /// `/plans`: the catalog; buttons follow.
    PlansChoose,
    /// A plan's button.
    PlanButton {
        plan: &'a str,
        slots: u32,
        days: u32,
        price: Decimal,
        currency: &'a str,
    },
    /// The invoice title for a plan.
    PlanTitle {
        plan: &'a str,
    },
    /// The invoice description for a plan.
    PlanDescription {
        plan: &'a str,
        slots: u32,
        days: u32,
    },
    /// A pre-checkout refused.
    CheckoutRefused,
    /// Credits bought in the chat.
    TopupDone {
        credits: Decimal,
        available: Decimal,
    },
    /// A plan bought in the chat.
    PlanDone {
        plan: &'a str,
    },
    /// A second charge for an invoice already paid: recorded, to be given back.
    DuplicateCharge,
    /// `/slots` with none.
    SlotsNone,
    /// `/slots` header.
    Slots {
        plan: Option<(&'a str, i64)>,
    },
    /// One slot line.
    SlotLine {
        slot: &'a str,
        destinations: i64,
        attempts: i64,
        successes: i64,
        failures: i64,
    },
    /// `/refund`: pick a spend.
    RefundChoose,
    /// `/refund` with nothing to refund.
    RefundNothing,
    /// A spend's button.
    SpendButton {
        kind: &'a str,
        amount: Decimal,
        at: &'a str,
    },
    /// Asking for the reason.
    RefundReason {
        amount: Decimal,
    },
    /// Request recorded.
    RefundRequested {
        amount: Decimal,
    },
    /// `/lang`: pick a language.
    LangChoose,
    /// Language changed.
    LangSet,
    /// The menu's buttons.
    MenuBalance,
    MenuHistory,
    MenuTopup,
    MenuPlans,
    MenuSlots,
    MenuRefund,
    MenuLang,
    /// History paging buttons.
    Prev,
    Next,
    /// A command the bot does not know.
    Unknown,
    /// The ledger refused (insufficient credits, blocked …): its reason.
    Refused {
        reason: &'a str,
    },
    /// A failure: an error id to quote.
    Failed {
        error_id: &'a str,
    },
    /// Maintenance is on.
    Maintenance,
    /// Not an admin.
    NotAdmin,
    /// Notification: a payment arrived outside the chat.
    NotifyTopup {
        credits: Decimal,
    },
    /// Notification: a plan was paid outside the chat.
    NotifyPlan {
        plan: &'a str,
    },
    /// Notification: an admin's grant.
    NotifyGrant {
        amount: Decimal,
        reason: &'a str,
    },
    /// Notification: an admin's adjustment.
    NotifyAdjusted {
        amount: Decimal,
        reason: &'a str,
    },
    /// Notification: refund approved.
    NotifyRefundApproved {
        amount: Decimal,
    },
    /// Notification: refund rejected.
    NotifyRefundRejected {
        reason: &'a str,
    },
    /// Notification: a hold expired, credits back.
    NotifyHoldExpired {
        amount: Decimal,
    },
    /// Notification: subscription expiring soon.
    NotifyExpiring {
        plan: &'a str,
        date: &'a str,
    },
    /// Notification: subscription expired.
    NotifyExpired,
    /// Notification: account blocked / unblocked.
    /// Notification: the credits fell below the user's alert threshold.
    NotifyBalanceLow {
        available: Decimal,
        threshold: Decimal,
    },
    /// `/alerts`: the setting now.
    AlertsNow {
        /// The threshold in force (`None`: off).
        threshold: Option<Decimal>,
        /// Whether it is the configured default.
        default: bool,
    },
    /// `/alerts` with something it does not understand.
    AlertsUsage,
    NotifyBlocked {
        reason: &'a str,
    },
    NotifyUnblocked,
    /// The poster stopped posting a slot to a chat until the owner fixes it.
    NotifyDestinationPaused {
        slot: &'a str,
        destination: String,
        reason: &'a str,
    },
    /// `/ads`: making and managing ads.
    Ad(AdText<'a>),
    /// `/terms` unless the operator set their own.
    Terms,
    /// `/paysupport` unless the operator set their own.
    PaySupport,
    /// A payment was given back; the credits it gave, if any, were taken back.
    NotifyPaymentRefunded {
        payment: &'a str,
        credits: Option<Decimal>,
    },
    /// A slot was paused because an admin lowered the owner's plan.
    NotifySlotPausedByPlan {
        slot: &'a str,
        slots: u32,
    },
    /// A slot's forum topic was deleted: it posts to the forum's General topic now.
    NotifyTopicFellBack {
        slot: &'a str,
        /// The deleted topic's destination.
        from: String,
        /// The chat posted to now.
        chat: i64,
    },
}

/// What `/ads` says.
#[derive(Clone, Debug)]
#[allow(missing_docs)] // fields: the values the text fills in, as they read
pub enum AdText<'a> {
    /// The list's header.
    Header {
        plan_slots: usize,
        active: usize,
    },
    /// One ad.
    Line {
        slot: &'a str,
        status: tally_domain::slot::SlotStatus,
        content: &'a str,
        photo: bool,
        buttons: usize,
        destinations: &'a str,
        /// Destinations posted to in the last cycle, of how many.
        last_cycle: Option<(usize, usize)>,
    },
    /// The menu's button.
    ButtonMenu,
    ButtonNew,
    ButtonEdit,
    ButtonPause,
    ButtonResume,
    ButtonDelete,
    /// No room in the plan.
    PlanFull {
        plan_slots: usize,
    },
    SendContent,
    BadContent {
        why: &'a str,
    },
    SendDestinations,
    NotADestination,
    DestinationAdded {
        title: &'a str,
        destination: String,
    },
    NoDestinations,
    RefusedNoChat,
    RefusedNotMember {
        title: &'a str,
    },
    RefusedNoRights {
        title: &'a str,
    },
    RefusedNoTopic {
        title: &'a str,
    },
    RefusedTopicClosed {
        title: &'a str,
    },
    Saved {
        slot: &'a str,
    },
    Cancelled,
    Paused {
        slot: &'a str,
    },
    Resumed {
        slot: &'a str,
    },
    Deleted {
        slot: &'a str,
    },
}

fn ad_en(text: AdText<'_>) -> String {
    use AdText::*;
    use tally_domain::slot::SlotStatus;
    match text {
        Header { plan_slots: 0, .. } => {
            "Your ads. You have no active plan: choose one in /plans to post ads.".into()
        }
        Header { plan_slots, active } => {
            format!("Your ads: {active} of {plan_slots} slots in use.")
        }
        Line {
            slot,
            status,
            content,
            photo,
            buttons,
            destinations,
            last_cycle,
        } => {
            let status = match status {
                SlotStatus::Active => "active",
                SlotStatus::Paused => "paused",
                SlotStatus::Removed => "deleted",
            };
            let photo = if photo { " [photo]" } else { "" };
            let last = match last_cycle {
                Some((posted, of)) => format!("last cycle: posted to {posted} of {of}"),
                None => "not posted yet".into(),
            };
            format!(
                "{slot} ({status}){photo}: {content}\nButtons: {buttons}. Where: {destinations}.\n{last}"
            )
        }
        ButtonMenu => "My ads".into(),
        ButtonNew => "New ad".into(),
        ButtonEdit => "Edit".into(),
        ButtonPause => "Pause".into(),
        ButtonResume => "Resume".into(),
        ButtonDelete => "Delete".into(),
        PlanFull { plan_slots } => format!(
            "Your plan gives {plan_slots} ad slots and all are in use: pause or delete an ad, \
             or choose a larger plan in /plans."
        ),
        SendContent => "Send the ad: a text, or a photo with a caption. To add link buttons, end \
            it with lines like `Order - https://example.com`. /cancel to stop."
            .into(),
        BadContent { why } => format!("That ad cannot be posted: {why}. Send it again."),
        SendDestinations => "Now where to post it: forward a message from the channel, or send \
            its @username, a t.me link, a forum topic link (t.me/name/123) or the chat id. \
            The bot must be an admin there with the right to post. /done when finished."
            .into(),
        NotADestination => "That is not a chat: forward a message from the channel, or send its \
            @username or t.me link. /done when finished, /cancel to stop."
            .into(),
        DestinationAdded { title, destination } => {
            format!("Added {title} ({destination}). Add another, or /done.")
        }
        NoDestinations => "Add at least one place to post first.".into(),
        RefusedNoChat => "I can't find that chat. Check the link or username; for a private \
            chat, add the bot first and forward a message from it."
            .into(),
        RefusedNotMember { title } => format!(
            "The bot is not a member of {title}. Add it as an admin with the right to post \
             messages, then send the link again."
        ),
        RefusedNoRights { title } => format!(
            "The bot may not post in {title}. Make it an admin with \"Post messages\", then \
             send the link again."
        ),
        RefusedNoTopic { title } => format!(
            "That topic does not exist in {title}. Send the link of an open topic, or the chat \
             itself to post in General."
        ),
        RefusedTopicClosed { title } => {
            format!("That topic in {title} is closed. Reopen it, then send the link again.")
        }
        Saved { slot } => format!("Saved: ad {slot}. It is posted from the next pass."),
        Cancelled => "Dropped; nothing was saved.".into(),
        Paused { slot } => format!("Ad {slot} is paused."),
        Resumed { slot } => format!("Ad {slot} is posted again."),
        Deleted { slot } => format!("Ad {slot} is deleted."),
    }
}

fn ad_ru(text: AdText<'_>) -> String {
    use AdText::*;
    use tally_domain::slot::SlotStatus;
    match text {
        Header { plan_slots: 0, .. } => {
            "Ваши объявления. Нет активного тарифа: выберите его в /plans.".into()
        }
        Header { plan_slots, active } => {
            format!("Ваши объявления: занято {active} из {plan_slots} мест.")
        }
        Line {
            slot,
            status,
            content,
            photo,
            buttons,
            destinations,
            last_cycle,
        } => {
            let status = match status {
                SlotStatus::Active => "активно",
                SlotStatus::Paused => "приостановлено",
                SlotStatus::Removed => "удалено",
            };
            let photo = if photo { " [фото]" } else { "" };
            let last = match last_cycle {
                Some((posted, of)) => format!("последний цикл: опубликовано в {posted} из {of}"),
                None => "ещё не публиковалось".into(),
            };
            format!(
                "{slot} ({status}){photo}: {content}\nКнопок: {buttons}. Куда: {destinations}.\n{last}"
            )
        }
        ButtonMenu => "Мои объявления".into(),
        ButtonNew => "Новое объявление".into(),
        ButtonEdit => "Изменить".into(),
        ButtonPause => "Пауза".into(),
        ButtonResume => "Возобновить".into(),
        ButtonDelete => "Удалить".into(),
        PlanFull { plan_slots } => format!(
            "Тариф даёт {plan_slots} рекламных мест, и все заняты: приостановите или удалите \
             объявление или выберите тариф побольше в /plans."
        ),
        SendContent => "Пришлите объявление: текст или фото с подписью. Кнопки-ссылки — строками \
            в конце вида `Заказать - https://example.com`. /cancel — отмена."
            .into(),
        BadContent { why } => format!("Такое объявление не опубликовать: {why}. Пришлите снова."),
        SendDestinations => "Теперь куда публиковать: перешлите сообщение из канала или пришлите \
            его @username, ссылку t.me, ссылку на тему форума (t.me/name/123) или id чата. Бот \
            должен быть там админом с правом публикации. /done — готово."
            .into(),
        NotADestination => "Это не чат: перешлите сообщение из канала или пришлите его @username \
            или ссылку t.me. /done — готово, /cancel — отмена."
            .into(),
        DestinationAdded { title, destination } => {
            format!("Добавлено: {title} ({destination}). Ещё одно или /done.")
        }
        NoDestinations => "Сначала добавьте хотя бы одно место публикации.".into(),
        RefusedNoChat => "Не нахожу такой чат. Проверьте ссылку или username; для закрытого чата \
            сначала добавьте бота и перешлите оттуда сообщение."
            .into(),
        RefusedNotMember { title } => format!(
            "Бота нет в {title}. Добавьте его админом с правом публиковать сообщения и пришлите \
             ссылку снова."
        ),
        RefusedNoRights { title } => format!(
            "Бот не может публиковать в {title}. Сделайте его админом с правом «Публикация \
             сообщений» и пришлите ссылку снова."
        ),
        RefusedNoTopic { title } => format!(
            "Такой темы нет в {title}. Пришлите ссылку на открытую тему или сам чат, чтобы \
             публиковать в General."
        ),
        RefusedTopicClosed { title } => {
            format!("Эта тема в {title} закрыта. Откройте её и пришлите ссылку снова.")
        }
        Saved { slot } => {
            format!("Сохранено: объявление {slot}. Публикуется со следующего прохода.")
        }
        Cancelled => "Отменено, ничего не сохранено.".into(),
        Paused { slot } => format!("Объявление {slot} приостановлено."),
        Resumed { slot } => format!("Объявление {slot} снова публикуется."),
        Deleted { slot } => format!("Объявление {slot} удалено."),
    }
}

fn history_lines(entries: &[Entry], kind: fn(&str) -> &'static str) -> String {
    entries
        .iter()
        .map(|e| {
            let sign = if e.amount > Decimal::ZERO { "+" } else { "" };
            format!(
                "{} · {} {sign}{} → {}",
                e.at,
                kind(&e.kind),
                credits(e.amount),
                credits(e.balance_after)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn kind_en(kind: &str) -> &'static str {
    match kind {
        "deposit" => "top-up",
        "grant" => "bonus",
        "debit" => "spent",
        "adjustment" => "correction",
        "hold_placed" => "reserved",
        "hold_captured" => "job paid",
        "hold_released" | "hold_expired" => "returned",
        "refund" => "refund",
        _ => "other",
    }
}

fn kind_ru(kind: &str) -> &'static str {
    match kind {
        "deposit" => "пополнение",
        "grant" => "бонус",
        "debit" => "списание",
        "adjustment" => "корректировка",
        "hold_placed" => "резерв",
        "hold_captured" => "оплата задачи",
        "hold_released" | "hold_expired" => "возврат резерва",
        "refund" => "возврат",
        _ => "другое",
    }
}

fn en(text: Text<'_>) -> String {
    use Text::*;
    match text {
        Welcome {
            name,
            available,
            held,
        } => format!(
            "Hello, {name}! Your balance: {} credits ({} reserved). Choose below.",
            credits(available),
            credits(held)
        ),
        Balance { available, held } => format!(
            "Balance: {} credits available, {} reserved.",
            credits(available),
            credits(held)
        ),
        History { page, entries } => {
            format!("History, page {page}:\n{}", history_lines(entries, kind_en))
        }
        HistoryEmpty => "No credit movements yet.".into(),
        TopupChoose => "Choose a credit pack:".into(),
        PackButton {
            credits: c,
            price,
            currency,
        } => {
            format!("{} credits — {} {currency}", credits(c), price.normalize())
        }
        PayChoose => "How would you like to pay?".into(),
        PayWith {
            provider,
            price,
            currency,
        } => format!(
            "{} — {} {currency}",
            provider_name(provider),
            price.normalize()
        ),
        PayLink {
            provider,
            price,
            currency,
        } => format!(
            "Pay {} {currency} with {} on the page below. Your credits arrive as soon as {} confirms the payment; I will tell you here.",
            price.normalize(),
            provider_name(provider),
            provider_name(provider)
        ),
        PayButton => "Pay".into(),
        PayUnavailable { provider } => format!(
            "{} is not answering right now. Nothing was charged; try again in a minute or choose another way to pay.",
            provider_name(provider)
        ),
        PackTitle { credits: c } => format!("{} credits", credits(c)),
        PackDescription { credits: c } => format!("Top up your balance by {} credits.", credits(c)),
        PlansChoose => "Plans (one period each):".into(),
        PlanButton {
            plan,
            slots,
            days,
            price,
            currency,
        } => format!(
            "{plan}: {slots} slots, {days} days — {} {currency}",
            price.normalize()
        ),
        PlanTitle { plan } => format!("Plan {plan}"),
        PlanDescription { plan, slots, days } => {
            format!("Plan {plan}: {slots} ad slots for {days} days.")
        }
        CheckoutRefused => {
            "This invoice is no longer valid. Please ask for a new one with /topup.".into()
        }
        TopupDone {
            credits: c,
            available,
        } => format!(
            "Payment received: +{} credits. Balance: {} credits.",
            credits(c),
            credits(available)
        ),
        PlanDone { plan } => format!("Payment received: plan {plan} is active."),
        DuplicateCharge => "This invoice was already paid, so this second payment bought nothing. \
            It is on record and an admin will give it back."
            .into(),
        SlotsNone => "You have no ad slots yet.".into(),
        Slots {
            plan: Some((plan, slots)),
        } => format!("Plan {plan}, {slots} slots. Your ad slots:"),
        Slots { plan: None } => "No active plan. Your ad slots:".into(),
        SlotLine {
            slot,
            destinations,
            attempts,
            successes,
            failures,
        } => format!(
            "• {slot}: {destinations} destinations, {attempts} posts tried, {successes} posted, {failures} failed"
        ),
        RefundChoose => "Which spend should be refunded?".into(),
        RefundNothing => "There is nothing to refund in the last 30 days.".into(),
        SpendButton { kind, amount, at } => {
            format!("{at} {} {}", kind_en(kind), credits(amount.abs()))
        }
        RefundReason { amount } => format!(
            "Refund of {} credits: please write the reason in one message.",
            credits(amount)
        ),
        RefundRequested { amount } => format!(
            "Refund request for {} credits sent. You will be told when an admin decides.",
            credits(amount)
        ),
        LangChoose => "Choose your language:".into(),
        LangSet => "Language set: English.".into(),
        MenuBalance => "Balance".into(),
        MenuHistory => "History".into(),
        MenuTopup => "Top up".into(),
        MenuPlans => "Plans".into(),
        MenuSlots => "My slots".into(),
        MenuRefund => "Refund".into(),
        MenuLang => "Language".into(),
        Prev => "◀ Newer".into(),
        Next => "Older ▶".into(),
        Unknown => "I do not know that command. Try /start.".into(),
        Refused { reason } => format!("Not done: {reason}."),
        Failed { error_id } => {
            format!("Sorry, something went wrong and nothing was changed. Error id: {error_id}.")
        }
        Maintenance => "The bot is under maintenance. Please try again later.".into(),
        NotAdmin => "This command is for admins only.".into(),
        NotifyTopup { credits: c } => format!("Your top-up arrived: +{} credits.", credits(c)),
        NotifyPlan { plan } => format!("Your payment for plan {plan} arrived; the plan is active."),
        NotifyGrant { amount, reason } => {
            format!("You received {} credits: {reason}.", credits(amount))
        }
        NotifyAdjusted { amount, reason } => {
            format!(
                "Your balance was corrected by {}: {reason}.",
                credits(amount)
            )
        }
        NotifyRefundApproved { amount } => format!(
            "Your refund was approved: {} credits are back on your balance.",
            credits(amount)
        ),
        NotifyRefundRejected { reason } => format!("Your refund was rejected: {reason}."),
        NotifyHoldExpired { amount } => format!(
            "A job did not finish in time; {} reserved credits are back on your balance.",
            credits(amount)
        ),
        NotifyExpiring { plan, date } => {
            format!("Your plan {plan} ends on {date}. Renew it with /plans.")
        }
        NotifyExpired => "Your plan has ended. Choose a new one with /plans.".into(),
        NotifyBalanceLow {
            available,
            threshold,
        } => format!(
            "Low balance: {} credits left, below your alert at {}. Top up with /topup; change the alert with /alerts.",
            credits(available),
            credits(threshold)
        ),
        AlertsNow { threshold, default } => match (threshold, default) {
            (None, _) => {
                "Low-balance alerts are off. Turn them on with /alerts 10 (credits).".into()
            }
            (Some(t), true) => format!(
                "I tell you when your credits fall below {} (the default). Change it with /alerts 10, or /alerts off.",
                credits(t)
            ),
            (Some(t), false) => format!(
                "I tell you when your credits fall below {}. Change it with /alerts 10, /alerts off or /alerts default.",
                credits(t)
            ),
        },
        AlertsUsage => "Write /alerts 10 (credits), /alerts off or /alerts default.".into(),
        NotifyBlocked { reason } => format!("Your account was blocked: {reason}."),
        NotifyUnblocked => "Your account was unblocked.".into(),
        NotifyDestinationPaused {
            slot,
            destination,
            reason,
        } => {
            let why = match reason {
                "topic_closed" => "the forum topic is closed",
                _ => "the bot was removed there or may not post",
            };
            format!(
                "Your ad {slot} is no longer posted to {destination}: {why}. Add the bot back \
                 with the right to post (or reopen the topic), then save the ad again."
            )
        }
        Ad(text) => ad_en(text),
        Terms => "Terms: credits and plans are bought with Telegram Stars and used in this bot. \
            A payment can be refunded while its credits are unspent: ask with /paysupport."
            .into(),
        PaySupport => "Payment help: write to this bot's operator (see the bot's description) \
            with your payment's id from /history. Telegram support cannot help with purchases \
            made in bots."
            .into(),
        NotifyPaymentRefunded {
            payment,
            credits: taken,
        } => match taken {
            Some(c) => format!(
                "Your payment {payment} was refunded; its {} credits were taken back.",
                credits(c)
            ),
            None => format!("Your payment {payment} was refunded."),
        },
        NotifySlotPausedByPlan { slot, slots } => format!(
            "Your plan now gives {slots} ad slots, so your ad {slot} (the newest beyond \
             them) is paused. Resume it in /ads after pausing or deleting another, or with a \
             larger plan."
        ),
        NotifyTopicFellBack { slot, from, chat } => format!(
            "The forum topic of your ad {slot} ({from}) was deleted: the ad is posted to the \
             forum's General topic of chat {chat} from now on. To post to another topic, save \
             the ad again with it."
        ),
    }
}

fn ru(text: Text<'_>) -> String {
    use Text::*;
    match text {
        Welcome {
            name,
            available,
            held,
        } => format!(
            "Здравствуйте, {name}! Ваш баланс: {} кредитов ({} в резерве). Выберите действие.",
            credits(available),
            credits(held)
        ),
        Balance { available, held } => format!(
            "Баланс: доступно {} кредитов, в резерве {}.",
            credits(available),
            credits(held)
        ),
        History { page, entries } => {
            format!(
                "История, страница {page}:\n{}",
                history_lines(entries, kind_ru)
            )
        }
        HistoryEmpty => "Движений по счёту пока нет.".into(),
        TopupChoose => "Выберите пакет кредитов:".into(),
        PackButton {
            credits: c,
            price,
            currency,
        } => {
            format!("{} кредитов — {} {currency}", credits(c), price.normalize())
        }
        PayChoose => "Как вы хотите оплатить?".into(),
        PayWith {
            provider,
            price,
            currency,
        } => format!(
            "{} — {} {currency}",
            provider_name(provider),
            price.normalize()
        ),
        PayLink {
            provider,
            price,
            currency,
        } => format!(
            "Оплатите {} {currency} через {} на странице ниже. Кредиты придут, как только {} подтвердит оплату; я сообщу здесь.",
            price.normalize(),
            provider_name(provider),
            provider_name(provider)
        ),
        PayButton => "Оплатить".into(),
        PayUnavailable { provider } => format!(
            "{} сейчас не отвечает. Деньги не списаны; попробуйте через минуту или выберите другой способ.",
            provider_name(provider)
        ),
        PackTitle { credits: c } => format!("{} кредитов", credits(c)),
        PackDescription { credits: c } => format!("Пополнение баланса на {} кредитов.", credits(c)),
        PlansChoose => "Тарифы (один период):".into(),
        PlanButton {
            plan,
            slots,
            days,
            price,
            currency,
        } => format!(
            "{plan}: слотов {slots}, дней {days} — {} {currency}",
            price.normalize()
        ),
        PlanTitle { plan } => format!("Тариф {plan}"),
        PlanDescription { plan, slots, days } => {
            format!("Тариф {plan}: рекламных слотов {slots} на {days} дней.")
        }
        CheckoutRefused => "Этот счёт уже недействителен. Запросите новый через /topup.".into(),
        TopupDone {
            credits: c,
            available,
        } => format!(
            "Оплата получена: +{} кредитов. Баланс: {} кредитов.",
            credits(c),
            credits(available)
        ),
        PlanDone { plan } => format!("Оплата получена: тариф {plan} активен."),
        DuplicateCharge => "Этот счёт уже был оплачен, поэтому второй платёж ничего не купил. \
            Он записан, и администратор вернёт его."
            .into(),
        SlotsNone => "У вас пока нет рекламных слотов.".into(),
        Slots {
            plan: Some((plan, slots)),
        } => {
            format!("Тариф {plan}, слотов: {slots}. Ваши слоты:")
        }
        Slots { plan: None } => "Нет активного тарифа. Ваши слоты:".into(),
        SlotLine {
            slot,
            destinations,
            attempts,
            successes,
            failures,
        } => format!(
            "• {slot}: мест публикации {destinations}, попыток {attempts}, опубликовано {successes}, ошибок {failures}"
        ),
        RefundChoose => "Какое списание вернуть?".into(),
        RefundNothing => "За последние 30 дней возвращать нечего.".into(),
        SpendButton { kind, amount, at } => {
            format!("{at} {} {}", kind_ru(kind), credits(amount.abs()))
        }
        RefundReason { amount } => format!(
            "Возврат {} кредитов: напишите причину одним сообщением.",
            credits(amount)
        ),
        RefundRequested { amount } => format!(
            "Запрос на возврат {} кредитов отправлен. Мы сообщим о решении администратора.",
            credits(amount)
        ),
        LangChoose => "Выберите язык:".into(),
        LangSet => "Язык: русский.".into(),
        MenuBalance => "Баланс".into(),
        MenuHistory => "История".into(),
        MenuTopup => "Пополнить".into(),
        MenuPlans => "Тарифы".into(),
        MenuSlots => "Мои слоты".into(),
        MenuRefund => "Возврат".into(),
        MenuLang => "Язык".into(),
        Prev => "◀ Новее".into(),
        Next => "Старше ▶".into(),
        Unknown => "Неизвестная команда. Попробуйте /start.".into(),
        Refused { reason } => format!("Не выполнено: {reason}."),
        Failed { error_id } => {
            format!("Извините, что-то пошло не так, ничего не изменено. Код ошибки: {error_id}.")
        }
        Maintenance => "Бот на техническом обслуживании. Попробуйте позже.".into(),
        NotAdmin => "Эта команда только для администраторов.".into(),
        NotifyTopup { credits: c } => format!("Пополнение зачислено: +{} кредитов.", credits(c)),
        NotifyPlan { plan } => format!("Оплата тарифа {plan} получена, тариф активен."),
        NotifyGrant { amount, reason } => {
            format!("Вам начислено {} кредитов: {reason}.", credits(amount))
        }
        NotifyAdjusted { amount, reason } => {
            format!(
                "Ваш баланс скорректирован на {}: {reason}.",
                credits(amount)
            )
        }
        NotifyRefundApproved { amount } => format!(
            "Возврат одобрен: {} кредитов снова на балансе.",
            credits(amount)
        ),
        NotifyRefundRejected { reason } => format!("Возврат отклонён: {reason}."),
        NotifyHoldExpired { amount } => format!(
            "Задача не завершилась вовремя; {} кредитов из резерва возвращены.",
            credits(amount)
        ),
        NotifyExpiring { plan, date } => {
            format!("Ваш тариф {plan} заканчивается {date}. Продлить: /plans.")
        }
        NotifyExpired => "Ваш тариф закончился. Выберите новый: /plans.".into(),
        NotifyBalanceLow {
            available,
            threshold,
        } => format!(
            "Мало кредитов: осталось {}, меньше порога {}. Пополните через /topup; порог меняется командой /alerts.",
            credits(available),
            credits(threshold)
        ),
        AlertsNow { threshold, default } => match (threshold, default) {
            (None, _) => {
                "Уведомления о низком балансе выключены. Включить: /alerts 10 (кредитов).".into()
            }
            (Some(t), true) => format!(
                "Я сообщу, когда кредитов станет меньше {} (по умолчанию). Изменить: /alerts 10 или /alerts off.",
                credits(t)
            ),
            (Some(t), false) => format!(
                "Я сообщу, когда кредитов станет меньше {}. Изменить: /alerts 10, /alerts off или /alerts default.",
                credits(t)
            ),
        },
        AlertsUsage => "Напишите /alerts 10 (кредитов), /alerts off или /alerts default.".into(),
        NotifyBlocked { reason } => format!("Ваш счёт заблокирован: {reason}."),
        NotifyUnblocked => "Ваш счёт разблокирован.".into(),
        NotifyDestinationPaused {
            slot,
            destination,
            reason,
        } => {
            let why = match reason {
                "topic_closed" => "тема форума закрыта",
                _ => "бота удалили оттуда или лишили права публиковать",
            };
            format!(
                "Объявление {slot} больше не публикуется в {destination}: {why}. Верните бота \
                 с правом публикации (или откройте тему) и сохраните объявление снова."
            )
        }
        Ad(text) => ad_ru(text),
        Terms => "Условия: кредиты и тарифы покупаются за Telegram Stars и используются в этом \
            боте. Платёж можно вернуть, пока его кредиты не потрачены: напишите в /paysupport."
            .into(),
        PaySupport => "Помощь с оплатой: напишите владельцу бота (см. описание бота) и укажите \
            номер платежа из /history. Поддержка Telegram не помогает с покупками в ботах."
            .into(),
        NotifyPaymentRefunded {
            payment,
            credits: taken,
        } => match taken {
            Some(c) => format!(
                "Платёж {payment} возвращён; его кредиты ({}) списаны.",
                credits(c)
            ),
            None => format!("Платёж {payment} возвращён."),
        },
        NotifySlotPausedByPlan { slot, slots } => format!(
            "Ваш тариф теперь даёт {slots} рекламных мест, поэтому объявление {slot} (самое \
             новое сверх них) приостановлено. Возобновите его в /ads, приостановив или удалив \
             другое, или с тарифом побольше."
        ),
        NotifyTopicFellBack { slot, from, chat } => format!(
            "Тема форума объявления {slot} ({from}) удалена: теперь оно публикуется в общей \
             теме (General) чата {chat}. Чтобы публиковать в другую тему, сохраните объявление \
             с ней снова."
        ),
    }
}

/// What the bot says to admins. Admin replies are in English (the operators' working
/// language); users' texts above are per language.
#[allow(missing_docs)] // fields: the values the text fills in, as they read
pub enum AdminText<'a> {
    /// A webhook endpoint failed for the whole retry schedule and was disabled.
    WebhookDisabled {
        endpoint: &'a str,
        url: &'a str,
        reason: &'a str,
    },
    /// The daily reconciliation found payments on one side only.
    Unreconciled {
        provider: &'a str,
        day: &'a str,
        provider_only: &'a [String],
        ledger_only: &'a [String],
    },
    /// How to use a command.
    Usage {
        usage: &'a str,
    },
    /// A grant done.
    Granted {
        user: i64,
        amount: Decimal,
        available: Decimal,
    },
    /// An adjustment done.
    Adjusted {
        user: i64,
        amount: Decimal,
        available: Decimal,
    },
    /// A plan correction done.
    SlotsFixed {
        user: i64,
        plan_before: &'a str,
        slots_before: u32,
        plan_after: &'a str,
        slots_after: u32,
    },
    /// Blocked / unblocked.
    Blocked {
        user: i64,
    },
    Unblocked {
        user: i64,
    },
    /// `/user`.
    UserCard {
        user: i64,
        status: &'a str,
        available: Decimal,
        held: Decimal,
        open_holds: usize,
        subscription: Option<(&'a str, u32, String)>,
        last: &'a [Entry],
        /// Second charges to give back: (payment id, provider charge id, amount, currency).
        duplicates: &'a [(String, String, Decimal, String)],
    },
    /// `/refunds` empty.
    RefundQueueEmpty,
    /// One request in the queue.
    RefundLine {
        refund_id: &'a str,
        user: i64,
        amount: Decimal,
        reference: &'a str,
        reason: &'a str,
    },
    /// Approve / reject buttons.
    ApproveButton,
    RejectButton,
    /// A refund decided.
    RefundApproved {
        refund_id: &'a str,
        available: Decimal,
    },
    RefundRejected {
        refund_id: &'a str,
    },
    /// `/refund_payment`: the Stars given back, the credits taken back.
    PaymentRefunded {
        payment: &'a str,
        charge: &'a str,
        credits: Decimal,
        user: i64,
        available: Decimal,
    },
    /// `/user`: the button that refunds a paid payment.
    RefundPaymentButton {
        payment: &'a str,
        amount: Decimal,
        currency: &'a str,
    },
    /// Asks the admin why a payment is refunded.
    RefundPaymentWhy {
        payment: &'a str,
    },
    /// A plan payment refunded through the provider: its period taken back.
    PlanPaymentRefunded {
        payment: &'a str,
        charge: &'a str,
        plan: &'a str,
        user: i64,
        period_end: &'a str,
    },
    /// `/stats`: one line per metric.
    Stats {
        today: &'a str,
        lines: &'a [(String, i64, i64)],
    },
    /// `/audit`.
    AuditConsistent {
        user: i64,
        available: Decimal,
        held: Decimal,
        events: u64,
    },
    AuditDifferent {
        user: i64,
        differences: &'a str,
    },
    /// `/maintenance`.
    Maintenance {
        on: bool,
    },
    /// A failure someone met.
    Failure {
        error_id: &'a str,
        chat: i64,
        error: &'a str,
    },
    /// A second charge for a payment already paid.
    DuplicateCharge {
        user: i64,
        payment_id: &'a str,
        charge: &'a str,
        amount: Decimal,
        currency: &'a str,
    },
}

impl AdminText<'_> {
    /// The text.
    pub fn say(self) -> String {
        use AdminText::*;
        match self {
            Self::WebhookDisabled {
                endpoint,
                url,
                reason,
            } => format!(
                "Webhook endpoint {endpoint} ({url}) was disabled: {reason}. Nothing more is sent \
                 to it; see GET /v1/admin/webhooks/{endpoint}/deliveries?failed=true."
            ),
            Self::Unreconciled {
                provider,
                day,
                provider_only,
                ledger_only,
            } => format!(
                "Reconciliation of {provider} on {day}: {} charge(s) of {provider} no payment records \
                 (money taken, nothing credited): {}; {} paid payment(s) {provider} does not list: {}. \
                 Details: GET /v1/admin/payments/reconciliation?provider={provider} or \
                 `tally payments reconcile {provider}`.",
                provider_only.len(),
                if provider_only.is_empty() {
                    "none".to_string()
                } else {
                    provider_only.join(", ")
                },
                ledger_only.len(),
                if ledger_only.is_empty() {
                    "none".to_string()
                } else {
                    ledger_only.join(", ")
                },
            ),
            Usage { usage } => format!("Usage: {usage}"),
            Granted {
                user,
                amount,
                available,
            } => format!(
                "Granted {} credits to {user}. Available now: {}.",
                credits(amount),
                credits(available)
            ),
            Adjusted {
                user,
                amount,
                available,
            } => format!(
                "Adjusted {user} by {}. Available now: {}.",
                credits(amount),
                credits(available)
            ),
            SlotsFixed {
                user,
                plan_before,
                slots_before,
                plan_after,
                slots_after,
            } => format!(
                "User {user}: plan {plan_before} ({slots_before} slots) → {plan_after} ({slots_after} slots)."
            ),
            Blocked { user } => format!("User {user} is blocked."),
            Unblocked { user } => format!("User {user} is unblocked."),
            UserCard {
                user,
                status,
                available,
                held,
                open_holds,
                subscription,
                last,
                duplicates,
            } => {
                let plan = match subscription {
                    Some((plan, slots, until)) => format!("{plan}, {slots} slots, until {until}"),
                    None => "none".into(),
                };
                let mut text = format!(
                    "User {user} ({status})\nAvailable: {}\nHeld: {} in {open_holds} open holds\nPlan: {plan}",
                    credits(available),
                    credits(held)
                );
                if !last.is_empty() {
                    text.push_str("\nLast entries:\n");
                    text.push_str(&history_lines(last, kind_en));
                }
                if !duplicates.is_empty() {
                    text.push_str("\nDuplicate charges to give back:");
                    for (payment, charge, amount, currency) in duplicates.iter() {
                        text.push_str(&format!(
                            "\n{amount} {currency}: payment {payment}, charge {charge}"
                        ));
                    }
                }
                text
            }
            RefundQueueEmpty => "No refund requests wait for a decision.".into(),
            RefundLine {
                refund_id,
                user,
                amount,
                reference,
                reason,
            } => format!(
                "Refund {refund_id}: user {user}, {} credits for {reference}: {reason}",
                credits(amount)
            ),
            ApproveButton => "Approve".into(),
            RejectButton => "Reject".into(),
            RefundApproved {
                refund_id,
                available,
            } => format!(
                "Refund {refund_id} approved; the user's available credits: {}.",
                credits(available)
            ),
            RefundRejected { refund_id } => format!("Refund {refund_id} rejected."),
            PaymentRefunded {
                payment,
                charge,
                credits,
                user,
                available,
            } => format!(
                "Refunded payment {payment} ({charge}): {} credits taken back from user {user}; \
                 available now {}.",
                credits.normalize(),
                available.normalize()
            ),
            RefundPaymentButton {
                payment,
                amount,
                currency,
            } => format!("↩ Refund {payment} ({} {currency})", amount.normalize()),
            RefundPaymentWhy { payment } => format!(
                "Why is payment {payment} refunded? Send the reason. Start it with `force` to \
                 take back credits already spent into a negative balance."
            ),
            PlanPaymentRefunded {
                payment,
                charge,
                plan,
                user,
                period_end,
            } => format!(
                "Refunded payment {payment} ({charge}): one period of plan {plan} taken back \
                 from user {user}; the plan now ends {period_end}."
            ),
            Stats { today, lines } => {
                let mut text = format!("Stats (today {today} | last 7 days):");
                for (metric, day, week) in lines {
                    text.push_str(&format!("\n{metric}: {day} | {week}"));
                }
                text
            }
            AuditConsistent {
                user,
                available,
                held,
                events,
            } => format!(
                "User {user}: consistent. Replayed {events} events: available {}, held {}.",
                credits(available),
                credits(held)
            ),
            AuditDifferent { user, differences } => {
                format!("User {user}: NOT consistent: {differences}")
            }
            Maintenance { on: true } => {
                "Maintenance is on: users are told to come back later.".into()
            }
            Maintenance { on: false } => "Maintenance is off.".into(),
            Failure {
                error_id,
                chat,
                error,
            } => {
                format!("A bot handler failed (error id {error_id}, chat {chat}): {error}")
            }
            DuplicateCharge {
                user,
                payment_id,
                charge,
                amount,
                currency,
            } => format!(
                "Duplicate charge: user {user} paid payment {payment_id} again ({amount} {currency}, \
                 charge {charge}). Nothing was credited; give it back."
            ),
        }
    }
}

/// A provider's name as payers know it.
fn provider_name(provider: &str) -> &str {
    match provider {
        "stars" => "⭐ Telegram Stars",
        "oxapay" => "OxaPay (crypto)",
        "paystack" => "Paystack",
        "yookassa" => "ЮKassa",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russian_codes_speak_russian_and_everything_else_english() {
        assert_eq!(Lang::from_code(Some("ru")), Lang::Ru);
        assert_eq!(Lang::from_code(Some("ru-RU")), Lang::Ru);
        assert_eq!(Lang::from_code(Some("en-GB")), Lang::En);
        assert_eq!(Lang::from_code(Some("de")), Lang::En);
        assert_eq!(Lang::from_code(None), Lang::En);
    }

    #[test]
    fn credits_show_two_decimals() {
        assert_eq!(credits(Decimal::new(5, 0)), "5.00");
        assert_eq!(credits(Decimal::new(-1250, 3)), "-1.25");
    }
}

//! The Telegram bot end to end: the real dispatcher (teloxide, long polling, throttled)
//! pointed at a fake Bot API server speaking real HTTP, over the real ledger, read
//! models, reactors and HTTP API on a real SQLite file and a fresh Postgres database.
//!
//! One file: every scenario shares one stack (app, fake Telegram, bot) and its helpers;
//! the scenarios read as the bot's user manual, in order.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

#[allow(dead_code)] // the payments suite uses more of the fake than the bot's cases do
mod fake_providers;
mod fake_telegram;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fake_telegram::{
    FakeChat, FakeTelegram, button, forwarded_from_channel, message, my_chat_member, photo_message,
    pre_checkout, successful_payment, user,
};
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tally_domain::Config;
use tally_domain::account::AccountCommand;
use tally_domain::payment::{PaymentCommand, Purpose, Terms};
use tally_domain::slot::{Destination, SlotCommand, SlotConfig};
use tally_domain::subscription::SubscriptionCommand;
use tally_domain::values::{
    Amount, DebitId, GrantId, HoldId, PaymentId, PlanId, Reason, SlotId, UserId,
};
use tally_ledger::{Accounts, Ledger, Payments, Request, Slots, Subscriptions};
use tally_projections::Projector;
use tally_store::testing::TestDatabase;
use tally_store::{Actor, EventStore, Metadata, StreamId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const ADMIN_A: i64 = 9_001;
const ADMIN_B: i64 = 9_002;
const WEBHOOK_SECRET: &str = "webhook-secret-0123456789";
/// The operator's `/terms` in English in the tests' bot.
const OPERATOR_TERMS: &str = "Bakery Bot terms: credits never expire.";
/// The secret Telegram sends with webhook updates (the bot's, not a payment's).
const WEBHOOK_TOKEN: &str = "telegram-secret-token_0123";

/// Everything `tally serve` runs, with the bot pointed at the fake Telegram.
struct Stack {
    fake: FakeTelegram,
    database: TestDatabase,
    ledgers: tally_ledger::Ledgers,
    store: Arc<dyn EventStore>,
    projector: Arc<Projector>,
    config: Arc<Config>,
    api: String,
    running: tally_app::Running,
    bot: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// Fake OxaPay, Paystack and YooKassa, when the stack sells through them.
    providers: Option<fake_providers::FakeProviders>,
}

impl Stack {
    async fn start(postgres: bool) -> Self {
        Self::start_with(postgres, false).await
    }

    /// The app as `tally serve` wires it ([`tally_app::start`]: read models, reactors,
    /// the API), its bot taking updates by a webhook route on the API's listener
    /// (`webhook`, started with the app) or by long polling (started beside it, so a
    /// test can stop and restart it).
    async fn start_with(postgres: bool, webhook: bool) -> Self {
        Self::start_selling(postgres, webhook, None).await
    }

    /// The same, selling also through the fake providers.
    async fn start_selling(
        postgres: bool,
        webhook: bool,
        providers: Option<fake_providers::FakeProviders>,
    ) -> Self {
        let database = match postgres {
            true => TestDatabase::postgres().await,
            false => TestDatabase::sqlite(),
        };
        let fake = FakeTelegram::start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        let bot = webhook.then(|| {
            let mut settings = bot_settings(&fake);
            settings.delivery = tally_bot::Delivery::Webhook {
                url: format!("{api}/telegram/webhook").parse().unwrap(),
                secret: WEBHOOK_TOKEN.into(),
            };
            settings
        });
        let app = tally_app::App {
            // Admin A also acts through the API with key name ops-alice.
            config: Config {
                admin_links: tally_domain::config::AdminLinks::parse(&format!(
                    "ops-alice:{ADMIN_A}"
                ))
                .unwrap(),
                ..Config::default()
            },
            api_keys: "service:bot:service-key-0123456789".into(),
            webhook_secrets: format!("stars:{WEBHOOK_SECRET}"),
            // As `tally serve` configures them: Stars from the bot's token.
            providers: providers
                .as_ref()
                .map(|p| p.settings())
                .unwrap_or_default()
                .with(tally_providers::ProviderSettings::Stars(
                    tally_providers::settings::StarsSettings {
                        token: "123456:TEST-TOKEN".into(),
                        api_url: fake.url.as_str().trim_end_matches('/').into(),
                    },
                )),
            bot,
            ..tally_app::App::new(&database.url)
        };
        let running = tally_app::start(app, Some(listener)).await.unwrap();
        let mut stack = Self {
            fake,
            database,
            ledgers: running.ledgers.clone(),
            store: running.store.clone(),
            projector: running.projector.clone(),
            config: running.ledgers.config().clone(),
            api,
            running,
            bot: None,
            providers,
        };
        if !webhook {
            stack.start_bot();
        }
        stack.wait_for_the_days_reconciliation().await;
        stack
    }

    /// The notifier reconciles Stars once a day at its first sweep and tells the
    /// admins what does not match; the cases start after it has, so its message
    /// never lands in the middle of an admin's conversation.
    async fn wait_for_the_days_reconciliation(&self) {
        let key = format!("reconciled:stars:{}", chrono::Utc::now().format("%Y-%m-%d"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM bot_notifications WHERE key = $1")
                    .bind(&key)
                    .fetch_optional(self.projector.pool())
                    .await
                    .unwrap();
            if done.is_some() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the notifier never reconciled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start_bot(&mut self) {
        let settings = bot_settings(&self.fake);
        // The operator's own English terms; the rest built in.
        let context = Arc::new(
            tally_bot::Context::new(
                self.ledgers.clone(),
                self.projector.clone(),
                settings.admin_ids.clone(),
            )
            .with_policy(tally_bot::Policy {
                terms_en: Some(OPERATOR_TERMS.into()),
                ..tally_bot::Policy::default()
            })
            // The providers the app was started with (Stars from the bot's token).
            .with_providers(self.running.state.as_ref().unwrap().providers.clone()),
        );
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            tally_bot::run(context, &settings, stopped).await.unwrap();
        });
        self.bot = Some((stop, task));
    }

    async fn stop_bot(&mut self) {
        if let Some((stop, task)) = self.bot.take() {
            stop.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the bot stops when told")
                .unwrap();
        }
    }

    async fn finish(mut self) {
        self.stop_bot().await;
        // As `tally serve` stops: everything at once (a webhook's listener ends when
        // the API's server lets go of its route).
        tokio::time::timeout(Duration::from_secs(30), self.running.stop())
            .await
            .unwrap()
            .unwrap();
        self.database.drop_database().await;
    }

    fn accounts(&self) -> Ledger<Accounts> {
        Ledger::new(self.store.clone(), self.config.clone())
    }

    async fn events_of(&self, stream: &str) -> Vec<tally_store::RecordedEvent> {
        self.store
            .read_stream(&StreamId::new(stream).unwrap(), 1, 10_000)
            .await
            .unwrap()
    }

    async fn count(&self, stream: &str, event_type: &str) -> usize {
        self.events_of(stream)
            .await
            .iter()
            .filter(|e| e.event_type == event_type)
            .count()
    }

    async fn available(&self, user: i64) -> Decimal {
        self.accounts()
            .load(&UserId::new(user).unwrap())
            .await
            .unwrap()
            .state
            .available
    }

    /// Grants credits as a backend would, and waits for the user to be told (so the
    /// notice does not arrive in the middle of what the test asks next).
    async fn grant(&self, user: i64, id: &str, credits: i64) {
        let told = |stack: &Self| {
            stack
                .fake
                .texts_to(user)
                .iter()
                .filter(|t| t.starts_with("You received"))
                .count()
        };
        let before = told(self);
        self.grant_quietly(user, id, credits).await;
        self.fake
            .wait_until("the grant notice", |_| told(self) > before)
            .await;
    }

    /// Spends credits as a backend would (a direct debit).
    async fn spend(&self, user: i64, id: &str, credits: i64, what: &str) {
        self.accounts()
            .execute(Request {
                key: UserId::new(user).unwrap(),
                command: AccountCommand::Debit {
                    debit_id: DebitId::new(id.to_string()).unwrap(),
                    amount: Amount::new(Decimal::from(credits)).unwrap(),
                    reason: Reason::new(what.to_string()).unwrap(),
                },
                command_id: None,
                metadata: Metadata::by(Actor::system("test")),
            })
            .await
            .unwrap();
    }

    async fn grant_quietly(&self, user: i64, id: &str, credits: i64) {
        self.accounts()
            .execute(Request {
                key: UserId::new(user).unwrap(),
                command: AccountCommand::Grant {
                    grant_id: GrantId::new(id.to_string()).unwrap(),
                    amount: Amount::new(Decimal::from(credits)).unwrap(),
                    reason: Reason::new("test setup".to_string()).unwrap(),
                },
                command_id: None,
                metadata: Metadata::by(Actor::system("test")),
            })
            .await
            .unwrap();
    }

    /// Sends a text as `from` and waits for the bot's next text to that chat.
    async fn say(&self, from: &Value, message_id: i64, text: &str) -> String {
        let chat = from["id"].as_i64().unwrap();
        let before = self.fake.texts_to(chat).len();
        self.fake.push(message(from, message_id, text));
        self.fake.wait_texts(chat, before + 1).await[before].clone()
    }
}

/// The bot's settings in tests: the fake Telegram, two admins, short polls, limits
/// high enough for a test's bursts.
fn bot_settings(fake: &FakeTelegram) -> tally_bot::Settings {
    let admins = HashSet::from([ADMIN_A, ADMIN_B]);
    let mut settings = tally_bot::Settings::new("123456:TEST-TOKEN", admins);
    settings.api_url = Some(fake.url.clone());
    settings.poll_timeout_seconds = 1;
    settings.limits = teloxide::adaptors::throttle::Limits {
        messages_per_sec_chat: 1_000,
        messages_per_min_chat: 60_000,
        messages_per_min_channel_or_supergroup: 60_000,
        messages_per_sec_overall: 10_000,
    };
    settings
}

/// The callback data of every inline button in a call's keyboard.
fn buttons(call: &fake_telegram::Call) -> Vec<String> {
    call.params["reply_markup"]["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["callback_data"].as_str().map(str::to_string))
        .collect()
}

/// The last `sendMessage`/`editMessageText` call to a chat.
fn last_message_to(fake: &FakeTelegram, chat: i64) -> fake_telegram::Call {
    fake.calls()
        .into_iter()
        .filter(|c| c.method == "sendMessage" || c.method == "editMessageText")
        .filter(|c| !c.refused)
        .filter(|c| {
            !c.params["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("You received"))
        })
        .rfind(|c| c.params["chat_id"].as_i64() == Some(chat))
        .expect("a message to the chat")
}

impl tally_store::testing::Fixture for Stack {
    async fn start(backend: tally_store::testing::Backend) -> Self {
        Stack::start(backend == tally_store::testing::Backend::Postgres).await
    }

    async fn finish(self) {
        Stack::finish(self).await
    }
}

/// The stack selling through Stars and three fake providers.
struct SellingStack(Stack);

impl tally_store::testing::Fixture for SellingStack {
    async fn start(backend: tally_store::testing::Backend) -> Self {
        let providers = fake_providers::FakeProviders::start().await;
        SellingStack(
            Stack::start_selling(
                backend == tally_store::testing::Backend::Postgres,
                false,
                Some(providers),
            )
            .await,
        )
    }

    async fn finish(self) {
        Stack::finish(self.0).await
    }
}

mod selling {
    use super::*;
    tally_store::on_both_backends!(
        SellingStack =>
        topup_offers_every_provider_and_a_paystack_payment_arrives_once,
    );
}

/// `/topup` with Stars, OxaPay, Paystack and YooKassa configured: the pack asks how to
/// pay (Stars first, each at its price in its currency); Paystack's choice is its pay
/// page as a link; Paystack's signed callback credits the pack once, and the user is
/// told once however often Paystack sends it.
async fn topup_offers_every_provider_and_a_paystack_payment_arrives_once(stack: &SellingStack) {
    let (stack, providers) = (&stack.0, stack.0.providers.as_ref().unwrap());
    let dana = user(940, "en");
    stack.say(&dana, 1, "/start").await;
    assert_eq!(stack.say(&dana, 2, "/topup").await, "Choose a credit pack:");
    stack.fake.push(button(&dana, "q-pack", 3, "t:pack_5"));
    stack
        .fake
        .wait_until("how to pay", |_| {
            stack.fake.texts_to(940).last().map(String::as_str)
                == Some("How would you like to pay?")
        })
        .await;
    let ways = last_message_to(&stack.fake, 940);
    assert_eq!(
        buttons(&ways),
        vec![
            "t:pack_5:stars",
            "t:pack_5:oxapay",
            "t:pack_5:paystack",
            "t:pack_5:yookassa"
        ]
    );
    let labels: Vec<String> = ways.params["reply_markup"]["inline_keyboard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(labels[2], "Paystack — 1500 NGN", "{labels:?}");
    assert_eq!(labels[3], "ЮKassa — 199 RUB", "{labels:?}");

    stack
        .fake
        .push(button(&dana, "q-paystack", 4, "t:pack_5:paystack"));
    let calls = stack
        .fake
        .wait_until("the pay link", |calls| {
            calls.iter().any(|c| {
                c.params["chat_id"] == 940
                    && c.params["reply_markup"]["inline_keyboard"][0][0]["url"].is_string()
            })
        })
        .await;
    let link = calls
        .iter()
        .rfind(|c| c.params["reply_markup"]["inline_keyboard"][0][0]["url"].is_string())
        .unwrap();
    let url = link.params["reply_markup"]["inline_keyboard"][0][0]["url"]
        .as_str()
        .unwrap();
    assert!(url.starts_with("https://checkout.paystack.com/"), "{url}");
    assert!(
        link.params["text"]
            .as_str()
            .unwrap()
            .starts_with("Pay 1500 NGN with Paystack")
    );
    let initialized = providers.requests_to("paystack.initialize");
    assert_eq!(initialized.len(), 1);
    assert_eq!(initialized[0]["amount"], "150000");
    let payment = initialized[0]["reference"].as_str().unwrap().to_string();
    assert_eq!(stack.available(940).await, Decimal::ZERO);

    // Dana pays at Paystack; Paystack calls back, three times.
    let (body, signature) = providers.paystack_charge(&payment, 150_000, "NGN");
    for _ in 0..3 {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/webhooks/paystack", stack.api))
            .header("x-paystack-signature", &signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(stack.available(940).await, Decimal::from(5));
    let told = |stack: &Stack| {
        stack
            .fake
            .texts_to(940)
            .iter()
            .filter(|t| t.starts_with("Your top-up arrived: +5"))
            .count()
    };
    stack
        .fake
        .wait_until("the top-up notice", |_| told(stack) > 0)
        .await;
    // Give the notifier time to tell twice if it would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(told(stack), 1, "{:?}", stack.fake.texts_to(940));
}

tally_store::on_both_backends!(
    Stack, owned =>
    start_twice_opens_one_account_and_speaks_the_users_language,
    a_stars_top_up_credits_once_however_often_telegram_delivers_it,
    the_daily_reconciliation_tells_the_admins_once,
    a_low_balance_is_told_once_until_a_top_up_rearms_it,
    admins_are_told_once_of_a_webhook_endpoint_given_up,
    a_tampered_or_stale_checkout_is_refused,
    history_pages_with_buttons,
    admin_commands_from_anyone_else_are_refused_and_append_nothing,
    admin_commands_take_effect_and_carry_the_admins_id,
    a_refund_approved_by_another_admin_returns_credits_and_tells_the_user,
    a_webhook_top_up_is_told_once_even_when_the_notifier_restarts,
    thirty_users_twenty_commands_each_all_answered_balances_exact,
    a_plan_bought_with_stars_gives_its_slots,
    a_failing_handler_answers_with_an_error_id_and_tells_the_admins,
    an_admin_cannot_approve_their_own_refund_and_a_rejection_is_told,
    an_expired_hold_is_told_with_the_credits_returned,
    a_plan_ending_within_three_days_is_told_once,
    one_unreachable_chat_never_holds_the_notifier_back,
    unpaid_invoices_do_not_pile_up,
    a_refund_an_admin_requested_through_the_api_is_not_theirs_to_approve_in_the_bot,
    a_cycle_posts_each_destination_once,
    a_post_with_an_unknown_outcome_is_not_doubled_after_a_crash,
    a_failed_post_is_on_record_by_its_class,
    a_rate_limited_post_waits_and_then_posts,
    a_migrated_chat_is_followed,
    a_deleted_topic_falls_back_to_the_general_topic,
    the_bot_removed_from_a_chat_pauses_its_destinations_before_the_next_cycle,
    a_post_without_an_answer_is_not_sent_again_in_its_cycle,
    an_ad_is_made_in_the_chat_with_each_destination_checked_first,
    a_click_then_a_payment_is_the_campaign_posts_conversion,
    a_closed_topic_is_paused_and_its_owner_told,
    an_admin_refunds_a_stars_payment_and_its_credits_are_taken_back,
    a_refund_made_by_telegram_is_recorded_once,
    terms_and_paysupport_answer_in_the_users_language,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_webhook_mode_telegram_posts_updates_with_its_secret() {
    let stack = Stack::start_with(false, true).await;
    let registered = stack.fake.calls_of("setWebhook");
    assert_eq!(
        registered.len(),
        1,
        "the webhook is registered with Telegram"
    );
    assert_eq!(
        registered[0].params["url"],
        format!("{}/telegram/webhook", stack.api)
    );
    assert_eq!(registered[0].params["secret_token"], WEBHOOK_TOKEN);
    assert!(
        stack.fake.calls_of("deleteWebhook").is_empty(),
        "not polling"
    );

    let client = reqwest::Client::new();
    let post = |update: Value, secret: Option<&str>| {
        let mut request = client
            .post(format!("{}/telegram/webhook", stack.api))
            .json(&update);
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        request.send()
    };
    let alice = user(801, "en");
    let mut start = message(&alice, 1, "/start");
    start["update_id"] = json!(1);
    for secret in [None, Some("wrong-secret")] {
        let answer = post(start.clone(), secret).await.unwrap();
        assert_eq!(answer.status(), 401, "{secret:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stack.fake.texts_to(801).is_empty(), "nothing answered");
    assert_eq!(
        stack.store.last_position().await.unwrap(),
        0,
        "nothing appended"
    );

    let answer = post(start, Some(WEBHOOK_TOKEN)).await.unwrap();
    assert_eq!(answer.status(), 200);
    let texts = stack.fake.wait_texts(801, 1).await;
    assert!(texts[0].starts_with("Hello, User801!"), "{texts:?}");
    assert_eq!(stack.count("account-801", "account.opened").await, 1);
    drop(client);
    stack.finish().await;
}

async fn start_twice_opens_one_account_and_speaks_the_users_language(stack: Stack) -> Stack {
    let alice = user(101, "en");
    let start = stack.fake.push(message(&alice, 1, "/start"));
    stack.fake.wait_texts(101, 1).await;
    // Telegram redelivers an update the bot did not confirm: same update, same id.
    stack.fake.push(start);
    let texts = stack.fake.wait_texts(101, 2).await;
    assert!(texts[0].starts_with("Hello, User101!"), "{texts:?}");
    assert_eq!(
        stack.count("account-101", "account.opened").await,
        1,
        "one account however often /start comes"
    );
    let menu = last_message_to(&stack.fake, 101);
    assert!(
        buttons(&menu).contains(&"m:topup".to_string()),
        "{:?}",
        menu.params
    );

    let boris = user(102, "ru");
    let greeting = stack.say(&boris, 1, "/start").await;
    assert!(greeting.starts_with("Здравствуйте, User102!"), "{greeting}");
    let balance = stack.say(&boris, 2, "/balance").await;
    assert_eq!(balance, "Баланс: доступно 0.00 кредитов, в резерве 0.00.");
    // Telegram says 429 (retry after 1 s) to the answer: it is waited out and sent.
    stack.fake.throttle_next("sendMessage", 1);
    let throttled = stack.fake.calls_of("sendMessage").len();
    // /lang → English: the choice sticks over Telegram's language code.
    assert_eq!(stack.say(&boris, 3, "/lang").await, "Выберите язык:");
    let sent = stack.fake.calls_of("sendMessage");
    assert_eq!(sent.len(), throttled + 2, "the refused call and its retry");
    assert!(sent[throttled].refused && !sent[throttled + 1].refused);
    assert_eq!(
        sent[throttled].params["text"],
        sent[throttled + 1].params["text"]
    );
    let before = stack.fake.texts_to(102).len();
    stack.fake.push(button(&boris, "q-lang", 5, "l:en"));
    assert_eq!(
        stack.fake.wait_texts(102, before + 1).await[before],
        "Language set: English."
    );
    let balance = stack.say(&boris, 4, "/balance").await;
    assert_eq!(balance, "Balance: 0.00 credits available, 0.00 reserved.");
    stack
}

/// Runs /topup → pack button → invoice for `who`; returns the invoice's payload.
async fn invoice_for_pack(stack: &Stack, who: &Value, pack: &str) -> Value {
    let chat = who["id"].as_i64().unwrap();
    let topup = stack.say(who, 10, "/topup").await;
    assert_eq!(topup, "Choose a credit pack:");
    let packs = buttons(&last_message_to(&stack.fake, chat));
    assert!(packs.contains(&format!("t:{pack}")), "{packs:?}");
    let invoices = stack.fake.calls_of("sendInvoice").len();
    stack.fake.push(button(
        who,
        &format!("q-{chat}-{pack}"),
        11,
        &format!("t:{pack}"),
    ));
    let calls = stack
        .fake
        .wait_until("an invoice", |calls| {
            calls.iter().filter(|c| c.method == "sendInvoice").count() > invoices
        })
        .await;
    calls
        .iter()
        .rfind(|c| c.method == "sendInvoice")
        .unwrap()
        .params
        .clone()
}

async fn checkout_answer(stack: &Stack, query_id: &str) -> Value {
    let calls = stack
        .fake
        .wait_until(&format!("the answer to pre-checkout {query_id}"), |calls| {
            calls.iter().any(|c| {
                c.method == "answerPreCheckoutQuery"
                    && c.params["pre_checkout_query_id"] == query_id
            })
        })
        .await;
    calls
        .into_iter()
        .find(|c| {
            c.method == "answerPreCheckoutQuery" && c.params["pre_checkout_query_id"] == query_id
        })
        .unwrap()
        .params
}

async fn a_stars_top_up_credits_once_however_often_telegram_delivers_it(stack: Stack) -> Stack {
    let alice = user(201, "en");
    stack.say(&alice, 1, "/start").await;
    let invoice = invoice_for_pack(&stack, &alice, "pack_5").await;
    assert_eq!(invoice["chat_id"], 201);
    assert_eq!(invoice["currency"], "XTR");
    assert_eq!(invoice["prices"][0]["amount"], 50, "{invoice}");
    assert!(
        invoice
            .get("provider_token")
            .is_none_or(|t| t.is_null() || t == ""),
        "Stars take no provider token: {invoice}"
    );
    assert_eq!(invoice["title"], "5.00 credits");
    let payload = invoice["payload"].as_str().unwrap().to_string();
    assert_eq!(
        stack
            .count(&format!("payment-{payload}"), "payment.created")
            .await,
        1,
        "the payload names a payment created in the ledger"
    );

    stack.fake.push(pre_checkout(&alice, "pc-ok", &payload, 50));
    let answer = checkout_answer(&stack, "pc-ok").await;
    assert_eq!(answer["ok"], true, "{answer}");

    let before = stack.fake.texts_to(201).len();
    let paid = stack
        .fake
        .push(successful_payment(&alice, 20, &payload, 50, "charge-201"));
    let texts = stack.fake.wait_texts(201, before + 1).await;
    assert_eq!(
        texts[before],
        "Payment received: +5.00 credits. Balance: 5.00 credits."
    );
    // The same successful_payment delivered again: confirmed again, credited once.
    stack.fake.push(paid);
    stack.fake.wait_texts(201, before + 2).await;
    assert_eq!(stack.count("account-201", "credits.deposited").await, 1);
    assert_eq!(stack.available(201).await, Decimal::from(5));
    assert_eq!(
        stack
            .count(&format!("payment-{payload}"), "payment.succeeded")
            .await,
        1
    );
    // A second real charge for the paid invoice (two checkouts both charged): on
    // record once, nothing credited, the user and both admins told once.
    let admins_before = stack.fake.texts_to(ADMIN_A).len();
    let second = stack
        .fake
        .push(successful_payment(&alice, 21, &payload, 50, "charge-202"));
    let texts = stack.fake.wait_texts(201, before + 3).await;
    assert!(texts[before + 2].contains("already paid"), "{texts:?}");
    let notes = stack.fake.wait_texts(ADMIN_A, admins_before + 1).await;
    assert!(
        notes[admins_before].contains("Duplicate charge")
            && notes[admins_before].contains("charge-202"),
        "{notes:?}"
    );
    stack.fake.push(second);
    stack.fake.wait_texts(201, before + 4).await;
    assert_eq!(
        stack
            .count(&format!("payment-{payload}"), "payment.duplicate_charge")
            .await,
        1
    );
    assert_eq!(stack.count("account-201", "credits.deposited").await, 1);
    assert_eq!(stack.available(201).await, Decimal::from(5));
    assert_eq!(
        stack.fake.texts_to(ADMIN_A).len(),
        admins_before + 1,
        "the admins are told once"
    );
    // And /user shows it to an admin, to give back.
    let admin = user(ADMIN_A, "en");
    let card = say_until(&stack, &admin, "/user 201", "charge-202").await;
    assert!(
        card.contains("Duplicate charges to give back:\n50.00 XTR"),
        "{card}"
    );
    stack
}

async fn a_tampered_or_stale_checkout_is_refused(stack: Stack) -> Stack {
    let alice = user(301, "en");
    let mallory = user(302, "en");
    stack.say(&alice, 1, "/start").await;
    let invoice = invoice_for_pack(&stack, &alice, "pack_20").await;
    let payload = invoice["payload"].as_str().unwrap().to_string();
    let head = stack.store.last_position().await.unwrap();
    let cases = [
        ("pc-tampered", &alice, format!("{payload}x"), 180),
        ("pc-garbage", &alice, "not a payment id!".to_string(), 180),
        ("pc-amount", &alice, payload.clone(), 1),
        ("pc-someone-else", &mallory, payload.clone(), 180),
    ];
    for (id, who, payload, stars) in &cases {
        stack.fake.push(pre_checkout(who, id, payload, *stars));
        let answer = checkout_answer(&stack, id).await;
        assert_eq!(answer["ok"], false, "{id}: {answer}");
        assert!(
            answer["error_message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{id}: a refusal says why: {answer}"
        );
    }
    assert_eq!(
        stack.store.last_position().await.unwrap(),
        head,
        "refusals append nothing"
    );
    // And the genuine one still goes through.
    stack
        .fake
        .push(pre_checkout(&alice, "pc-genuine", &payload, 180));
    assert_eq!(checkout_answer(&stack, "pc-genuine").await["ok"], true);
    stack
}

async fn history_pages_with_buttons(stack: Stack) -> Stack {
    let alice = user(401, "en");
    stack.say(&alice, 1, "/start").await;
    for n in 1..=7 {
        stack.grant(401, &format!("g-{n}"), n).await;
    }
    let page = stack.say(&alice, 2, "/history").await;
    let lines: Vec<&str> = page.lines().collect();
    assert_eq!(lines[0], "History, page 1:");
    assert_eq!(lines.len(), 6, "five entries a page: {page}");
    assert!(
        lines[1].contains("bonus +7.00 → 28.00"),
        "newest first: {page}"
    );
    let first = last_message_to(&stack.fake, 401);
    assert_eq!(
        buttons(&first),
        vec!["h:1".to_string()],
        "only Older on page 1"
    );

    let before = stack.fake.texts_to(401).len();
    stack.fake.push(button(&alice, "q-h1", 3, "h:1"));
    let texts = stack.fake.wait_texts(401, before + 1).await;
    let edit = last_message_to(&stack.fake, 401);
    assert_eq!(
        edit.method, "editMessageText",
        "the page is edited in place"
    );
    assert_eq!(edit.params["message_id"], 3);
    let lines: Vec<&str> = texts[before].lines().collect();
    assert_eq!(lines[0], "History, page 2:");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[2].contains("bonus +1.00 → 1.00"), "{lines:?}");
    assert_eq!(
        buttons(&edit),
        vec!["h:0".to_string()],
        "only Newer on the last page"
    );
    stack
}

const ADMIN_COMMANDS: &[&str] = &[
    "/grant 7172873873 10 welcome",
    "/adjust 7172873873 -1 fix",
    "/fix_user_slots 7172873873 basic",
    "/block 7172873873 spam",
    "/unblock 7172873873",
    "/user 7172873873",
    "/refunds",
    "/stats",
    "/audit 7172873873",
    "/maintenance on",
];

async fn admin_commands_from_anyone_else_are_refused_and_append_nothing(stack: Stack) -> Stack {
    let eve = user(501, "en");
    stack.say(&eve, 1, "/start").await;
    let head = stack.store.last_position().await.unwrap();
    for (n, command) in ADMIN_COMMANDS.iter().enumerate() {
        let reply = stack.say(&eve, 10 + n as i64, command).await;
        assert_eq!(reply, "This command is for admins only.", "{command}");
    }
    // A forged button press too.
    let before = stack.fake.texts_to(501).len();
    stack.fake.push(button(&eve, "q-forged", 2, "ra:tg-501-1"));
    assert_eq!(
        stack.fake.wait_texts(501, before + 1).await[before],
        "This command is for admins only."
    );
    assert_eq!(
        stack.store.last_position().await.unwrap(),
        head,
        "nothing appended"
    );
    // Maintenance did not turn on.
    assert_eq!(
        stack.say(&eve, 30, "/balance").await,
        "Balance: 0.00 credits available, 0.00 reserved."
    );
    stack
}

async fn admin_commands_take_effect_and_carry_the_admins_id(stack: Stack) -> Stack {
    const USER: i64 = 7_172_873_873;
    let admin = user(ADMIN_A, "en");
    let owner = user(USER, "en");
    stack.say(&owner, 1, "/start").await;
    // The user is on enterprise (5 slots).
    Ledger::<Subscriptions>::new(stack.store.clone(), stack.config.clone())
        .execute(Request {
            key: UserId::new(USER).unwrap(),
            command: SubscriptionCommand::Pay {
                payment_id: PaymentId::new("ent-1".to_string()).unwrap(),
                plan: PlanId::new("enterprise".to_string()).unwrap(),
            },
            command_id: Some("pay:ent-1".into()),
            metadata: Metadata::by(Actor::system("test")),
        })
        .await
        .unwrap();

    let reply = stack
        .say(&admin, 1, "/grant 7172873873 10 welcome bonus")
        .await;
    assert_eq!(
        reply,
        "Granted 10.00 credits to 7172873873. Available now: 10.00."
    );
    let grant = stack.events_of("account-7172873873").await.pop().unwrap();
    assert_eq!(grant.event_type, "credits.granted");
    assert_eq!(grant.metadata.actor.id, ADMIN_A.to_string());
    assert_eq!(grant.payload["reason"], "welcome bonus");
    // A command addressed to another bot (a group with several) is not ours: nothing
    // appended, no answer; addressed to us by name, it runs.
    let head = stack.store.last_position().await.unwrap();
    let before = stack.fake.texts_to(ADMIN_A).len();
    stack.fake.push(message(
        &admin,
        2,
        "/grant@other_bot 7172873873 10 not ours",
    ));
    let reply = stack
        .say(&admin, 3, "/user@tally_test_bot 7172873873")
        .await;
    assert!(reply.starts_with("User 7172873873"), "{reply}");
    assert_eq!(stack.fake.texts_to(ADMIN_A).len(), before + 1, "one answer");
    assert_eq!(
        stack.store.last_position().await.unwrap(),
        head,
        "the command for another bot appended nothing"
    );

    let reply = stack
        .say(&admin, 2, "/adjust 7172873873 -2.5 duplicate bonus")
        .await;
    assert_eq!(reply, "Adjusted 7172873873 by -2.50. Available now: 7.50.");
    // Over-drawing and nonsense are refused with a reason, and usage is shown.
    let reply = stack
        .say(&admin, 3, "/adjust 7172873873 -100 too much")
        .await;
    assert!(reply.starts_with("Not done:"), "{reply}");
    assert_eq!(
        stack.say(&admin, 4, "/grant 7172873873 lots").await,
        "Usage: /grant USER AMOUNT REASON"
    );

    let reply = stack
        .say(&admin, 5, "/fix_user_slots 7172873873 basic")
        .await;
    assert_eq!(
        reply,
        "User 7172873873: plan enterprise (5 slots) → basic (1 slots)."
    );
    let correction = stack
        .events_of("subscription-7172873873")
        .await
        .pop()
        .unwrap();
    assert_eq!(correction.event_type, "subscription.slots_corrected");
    assert_eq!(correction.metadata.actor.id, ADMIN_A.to_string());
    assert_eq!(correction.payload["slots_before"], 5);
    assert_eq!(correction.payload["slots_after"], 1);

    assert_eq!(
        stack.say(&admin, 6, "/block 7172873873 chargeback").await,
        "User 7172873873 is blocked."
    );
    let card = stack.say(&admin, 7, "/user 7172873873").await;
    assert!(
        card.starts_with("User 7172873873 (blocked)\nAvailable: 7.50"),
        "{card}"
    );
    assert!(card.contains("Plan: basic, 1 slots"), "{card}");
    assert_eq!(
        stack.say(&admin, 8, "/unblock 7172873873").await,
        "User 7172873873 is unblocked."
    );
    let audit = stack.say(&admin, 9, "/audit 7172873873").await;
    assert!(audit.starts_with("User 7172873873: consistent."), "{audit}");
    let stats = stack.say(&admin, 10, "/stats").await;
    assert!(stats.starts_with("Stats (today"), "{stats}");

    // Maintenance: users are told to come back, admins keep working; on record.
    assert!(
        stack
            .say(&admin, 11, "/maintenance on upgrade")
            .await
            .starts_with("Maintenance is on")
    );
    assert_eq!(
        stack.say(&owner, 2, "/balance").await,
        "The bot is under maintenance. Please try again later."
    );
    assert!(
        stack
            .say(&admin, 12, "/user 7172873873")
            .await
            .starts_with("User 7172873873 (open)")
    );
    assert_eq!(
        stack.say(&admin, 13, "/maintenance off").await,
        "Maintenance is off."
    );
    assert!(
        stack
            .say(&owner, 3, "/balance")
            .await
            .starts_with("Balance: 7.50")
    );
    let switches = stack.events_of("bot-maintenance").await;
    assert_eq!(switches.len(), 2);
    assert_eq!(switches[0].payload["on"], true);
    assert_eq!(switches[0].metadata.actor.id, ADMIN_A.to_string());
    // Switched on by an admin of another process: this one follows within seconds.
    stack
        .store
        .append(
            &StreamId::new(tally_bot::MAINTENANCE_STREAM).unwrap(),
            tally_store::ExpectedVersion::Exact(2),
            vec![tally_store::NewEvent::new(
                tally_bot::MAINTENANCE_SWITCHED,
                json!({"on": true, "admin": ADMIN_B.to_string(), "reason": "elsewhere"}),
                Metadata::by(Actor::new(
                    tally_store::ActorKind::Admin,
                    ADMIN_B.to_string(),
                )),
            )],
        )
        .await
        .unwrap();
    say_until(&stack, &owner, "/balance", "under maintenance").await;
    stack
}

async fn a_refund_approved_by_another_admin_returns_credits_and_tells_the_user(
    stack: Stack,
) -> Stack {
    let alice = user(601, "en");
    stack.say(&alice, 1, "/start").await;
    stack.grant(601, "g-601", 10).await;
    stack.spend(601, "job-601", 4, "render").await;
    assert_eq!(
        stack.say(&alice, 2, "/refund").await,
        "Which spend should be refunded?"
    );
    let spends = buttons(&last_message_to(&stack.fake, 601));
    assert_eq!(spends.len(), 1, "{spends:?}");
    let before = stack.fake.texts_to(601).len();
    stack.fake.push(button(&alice, "q-r", 9, &spends[0]));
    assert_eq!(
        stack.fake.wait_texts(601, before + 1).await[before],
        "Refund of 4.00 credits: please write the reason in one message."
    );
    let requested = stack.say(&alice, 3, "the render failed").await;
    assert!(
        requested.starts_with("Refund request for 4.00 credits sent."),
        "{requested}"
    );
    let refund_id = format!("tg-601-{}", spends[0].trim_start_matches("r:"));

    let admin_a = user(ADMIN_A, "en");
    let admin_b = user(ADMIN_B, "en");
    // The queue, once the read model has the request.
    let queue = loop {
        let queue = stack.say(&admin_a, 1, "/refunds").await;
        if queue.contains(&refund_id) {
            break queue;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        queue.contains("user 601, 4.00 credits for debit:job-601: the render failed"),
        "{queue}"
    );
    assert!(buttons(&last_message_to(&stack.fake, ADMIN_A)).contains(&format!("ra:{refund_id}")));

    let before = stack.fake.texts_to(ADMIN_B).len();
    stack
        .fake
        .push(button(&admin_b, "q-approve", 2, &format!("ra:{refund_id}")));
    let reply = stack.fake.wait_texts(ADMIN_B, before + 1).await[before].clone();
    assert_eq!(
        reply,
        format!("Refund {refund_id} approved; the user's available credits: 10.00.")
    );
    let told = stack
        .fake
        .wait_until("the user told of the refund", |_| {
            stack
                .fake
                .texts_to(601)
                .iter()
                .any(|t| t.starts_with("Your refund was approved: 4.00 credits"))
        })
        .await;
    assert!(!told.is_empty());
    assert_eq!(stack.available(601).await, Decimal::from(10));
    assert_eq!(stack.count("account-601", "credits.refunded").await, 1);
    // Approving again answers the same and changes nothing.
    let before = stack.fake.texts_to(ADMIN_A).len();
    stack
        .fake
        .push(button(&admin_a, "q-again", 3, &format!("ra:{refund_id}")));
    let again = stack.fake.wait_texts(ADMIN_A, before + 1).await[before].clone();
    assert_eq!(again, reply);
    assert_eq!(stack.count("account-601", "credits.refunded").await, 1);
    assert_eq!(stack.available(601).await, Decimal::from(10));
    stack
}

fn sign(body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Creates a payment as a bot backend would, then sends its provider's signed
/// webhook `times` times.
async fn pay_by_webhook(stack: &Stack, user: i64, payment: &str, purpose: Purpose, times: usize) {
    Ledger::<Payments>::new(stack.store.clone(), stack.config.clone())
        .execute(Request {
            key: PaymentId::new(payment.to_string()).unwrap(),
            command: PaymentCommand::Create(Terms {
                user_id: UserId::new(user).unwrap(),
                provider: "stars".into(),
                amount: Amount::new(Decimal::from(100)).unwrap(),
                currency: "XTR".into(),
                purpose,
            }),
            command_id: None,
            metadata: Metadata::by(Actor::system("test")),
        })
        .await
        .unwrap();
    let body = json!({"payment_id": payment, "status": "succeeded", "amount": "100",
                      "currency": "XTR", "provider_payment_id": format!("tx-{payment}")})
    .to_string();
    let client = reqwest::Client::new();
    for _ in 0..times {
        let response = client
            .post(format!("{}/v1/webhooks/stars", stack.api))
            .header("X-Tally-Signature", sign(&body))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}

async fn a_webhook_top_up_is_told_once_even_when_the_notifier_restarts(mut stack: Stack) -> Stack {
    let alice = user(701, "en");
    stack.say(&alice, 1, "/start").await;
    let credits = Purpose::Credits(Amount::new(Decimal::from(20)).unwrap());
    pay_by_webhook(&stack, 701, "oxa-701", credits, 3).await;
    let plan = Purpose::Plan(PlanId::new("pro".to_string()).unwrap());
    pay_by_webhook(&stack, 701, "oxa-701-plan", plan, 2).await;
    let notices = [
        "Your top-up arrived: +20.00 credits.",
        "Your payment for plan pro arrived; the plan is active.",
    ];
    let told = |stack: &Stack| {
        notices.map(|notice| {
            stack
                .fake
                .texts_to(701)
                .iter()
                .filter(|t| *t == notice)
                .count()
        })
    };
    stack
        .fake
        .wait_until("both notices", |_| told(&stack) == [1, 1])
        .await;

    // The notifier dies and comes back having lost its checkpoint: it reads the
    // whole log again, and still sends nothing twice.
    stack.stop_bot().await;
    sqlx::query("UPDATE projections SET checkpoint = 0 WHERE name = 'notifier'")
        .execute(stack.projector.pool())
        .await
        .unwrap();
    stack.start_bot();
    let head = stack.store.last_position().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let checkpoint: i64 =
            sqlx::query_scalar("SELECT checkpoint FROM projections WHERE name = 'notifier'")
                .fetch_one(stack.projector.pool())
                .await
                .unwrap();
        if checkpoint as u64 >= head {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notifier caught up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        told(&stack),
        [1, 1],
        "told once: {:?}",
        stack.fake.texts_to(701)
    );
    assert_eq!(stack.count("account-701", "credits.deposited").await, 1);
    stack
}

async fn thirty_users_twenty_commands_each_all_answered_balances_exact(stack: Stack) -> Stack {
    const USERS: i64 = 30;
    const COMMANDS: usize = 20;
    let users: Vec<Value> = (0..USERS)
        .map(|n| user(10_000 + n, if n % 2 == 0 { "en" } else { "ru" }))
        .collect();
    for who in &users {
        stack.fake.push(message(who, 1, "/start"));
    }
    // Every user's updates are queued, interleaved, before most are answered.
    for step in 1..COMMANDS {
        for who in &users {
            let text = if step % 2 == 0 {
                "/history"
            } else {
                "/balance"
            };
            stack.fake.push(message(who, 1 + step as i64, text));
        }
    }
    // Meanwhile, once their accounts are open, each user gets 5 grants of 1.50 from
    // a backend.
    stack
        .fake
        .wait_until("every account opened", |_| {
            (0..USERS).all(|n| !stack.fake.texts_to(10_000 + n).is_empty())
        })
        .await;
    let granting = {
        let accounts = stack.accounts();
        tokio::spawn(async move {
            for round in 0..5 {
                for n in 0..USERS {
                    accounts
                        .execute(Request {
                            key: UserId::new(10_000 + n).unwrap(),
                            command: AccountCommand::Grant {
                                grant_id: GrantId::new(format!("load-{n}-{round}")).unwrap(),
                                amount: Amount::new(Decimal::new(150, 2)).unwrap(),
                                reason: Reason::new("load".to_string()).unwrap(),
                            },
                            command_id: None,
                            metadata: Metadata::by(Actor::system("test")),
                        })
                        .await
                        .unwrap();
                }
            }
        })
    };
    let answers = |chat: i64| {
        stack
            .fake
            .texts_to(chat)
            .into_iter()
            .filter(|t| !t.starts_with("You received") && !t.starts_with("Вам начислено"))
            .count()
    };
    stack
        .fake
        .wait_until("every command answered", |_| {
            (0..USERS).all(|n| answers(10_000 + n) >= COMMANDS)
        })
        .await;
    granting.await.unwrap();
    for n in 0..USERS {
        assert_eq!(
            answers(10_000 + n),
            COMMANDS,
            "user {n}: one answer per command"
        );
        assert_eq!(
            stack.available(10_000 + n).await,
            Decimal::new(750, 2),
            "user {n}"
        );
        assert_eq!(
            stack
                .count(&format!("account-{}", 10_000 + n), "account.opened")
                .await,
            1
        );
    }
    // Each user's answers came in the order asked: the greeting first.
    for (n, who) in users.iter().enumerate() {
        let chat = who["id"].as_i64().unwrap();
        let first = &stack.fake.texts_to(chat)[0];
        let greeting = if n % 2 == 0 {
            "Hello"
        } else {
            "Здравствуйте"
        };
        assert!(first.starts_with(greeting), "{first}");
    }
    stack
}

/// Asks `who`'s chat `text` until the answer contains `wanted` (a read model may still
/// be catching up), and returns that answer.
async fn say_until(stack: &Stack, who: &Value, text: &str, wanted: &str) -> String {
    let mut answer = String::new();
    for attempt in 0..100 {
        answer = stack.say(who, 100 + attempt, text).await;
        if answer.contains(wanted) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{text} never answered with {wanted:?}; last: {answer}");
}

async fn a_plan_bought_with_stars_gives_its_slots(stack: Stack) -> Stack {
    let alice = user(901, "en");
    stack.say(&alice, 1, "/start").await;
    assert_eq!(
        stack.say(&alice, 2, "/subscribe").await,
        "Plans (one period each):"
    );
    let plans = buttons(&last_message_to(&stack.fake, 901));
    assert_eq!(plans, vec!["p:basic", "p:enterprise", "p:pro"]);
    let invoices = stack.fake.calls_of("sendInvoice").len();
    stack.fake.push(button(&alice, "q-plan", 3, "p:pro"));
    let calls = stack
        .fake
        .wait_until("the plan's invoice", |calls| {
            calls.iter().filter(|c| c.method == "sendInvoice").count() > invoices
        })
        .await;
    let invoice = calls
        .iter()
        .rfind(|c| c.method == "sendInvoice")
        .unwrap()
        .params
        .clone();
    assert_eq!(invoice["title"], "Plan pro");
    assert_eq!(invoice["currency"], "XTR");
    assert_eq!(invoice["prices"][0]["amount"], 250);
    let payload = invoice["payload"].as_str().unwrap().to_string();
    stack
        .fake
        .push(pre_checkout(&alice, "pc-plan", &payload, 250));
    assert_eq!(checkout_answer(&stack, "pc-plan").await["ok"], true);
    let before = stack.fake.texts_to(901).len();
    stack
        .fake
        .push(successful_payment(&alice, 4, &payload, 250, "charge-901"));
    assert_eq!(
        stack.fake.wait_texts(901, before + 1).await[before],
        "Payment received: plan pro is active."
    );
    let subscription = Ledger::<Subscriptions>::new(stack.store.clone(), stack.config.clone())
        .load(&UserId::new(901).unwrap())
        .await
        .unwrap()
        .state;
    assert_eq!(subscription.plan.unwrap().as_str(), "pro");
    assert_eq!(subscription.slots, 3);

    Ledger::<Slots>::new(stack.store.clone(), stack.config.clone())
        .execute(Request {
            key: SlotId::new("s-901".to_string()).unwrap(),
            command: SlotCommand::Configure(SlotConfig {
                user_id: UserId::new(901).unwrap(),
                content: "Fresh bread daily".into(),
                destinations: vec![Destination {
                    chat_id: -100_123,
                    topic_id: None,
                }],
                photo: None,
                buttons: Vec::new(),
            }),
            command_id: None,
            metadata: Metadata::by(Actor::system("test")),
        })
        .await
        .unwrap();
    let slots = say_until(&stack, &alice, "/slots", "s-901").await;
    assert_eq!(
        slots,
        "Plan pro, 3 slots. Your ad slots:\n• s-901: 1 destinations, 0 posts tried, 0 posted, 0 failed"
    );
    stack
}

async fn a_failing_handler_answers_with_an_error_id_and_tells_the_admins(stack: Stack) -> Stack {
    let alice = user(1_001, "en");
    stack.say(&alice, 1, "/start").await;
    let head = stack.store.last_position().await.unwrap();
    // The statement's read model goes missing under the bot.
    sqlx::query("DROP VIEW statement")
        .execute(stack.projector.pool())
        .await
        .unwrap();
    let answer = stack.say(&alice, 2, "/history").await;
    let prefix = "Sorry, something went wrong and nothing was changed. Error id: ";
    assert!(answer.starts_with(prefix), "{answer}");
    let error_id = answer[prefix.len()..].trim_end_matches('.').to_string();
    assert!(!error_id.is_empty());
    for admin in [ADMIN_A, ADMIN_B] {
        let note = stack.fake.wait_texts(admin, 1).await.join("\n");
        assert!(
            note.contains(&format!("error id {error_id}, chat 1001")),
            "{note}"
        );
    }
    assert_eq!(stack.store.last_position().await.unwrap(), head);
    stack
}

async fn an_admin_cannot_approve_their_own_refund_and_a_rejection_is_told(stack: Stack) -> Stack {
    let admin_a = user(ADMIN_A, "en");
    let admin_b = user(ADMIN_B, "en");
    stack.say(&admin_a, 1, "/start").await;
    stack.grant(ADMIN_A, "g-a", 5).await;
    stack.spend(ADMIN_A, "job-a", 2, "render").await;
    stack.say(&admin_a, 2, "/refund").await;
    let spend = buttons(&last_message_to(&stack.fake, ADMIN_A)).remove(0);
    let before = stack.fake.texts_to(ADMIN_A).len();
    stack.fake.push(button(&admin_a, "q-ra", 7, &spend));
    stack.fake.wait_texts(ADMIN_A, before + 1).await;
    stack.say(&admin_a, 3, "my own job failed").await;
    let refund_id = format!("tg-{ADMIN_A}-{}", spend.trim_start_matches("r:"));

    let before = stack.fake.texts_to(ADMIN_A).len();
    stack
        .fake
        .push(button(&admin_a, "q-self", 8, &format!("ra:{refund_id}")));
    let refused = stack.fake.wait_texts(ADMIN_A, before + 1).await[before].clone();
    assert!(refused.starts_with("Not done:"), "{refused}");
    assert_eq!(
        stack
            .count(&format!("refund-{refund_id}"), "refund.approved")
            .await,
        0
    );

    let before = stack.fake.texts_to(ADMIN_B).len();
    stack
        .fake
        .push(button(&admin_b, "q-reject", 9, &format!("rr:{refund_id}")));
    assert_eq!(
        stack.fake.wait_texts(ADMIN_B, before + 1).await[before],
        format!("Refund {refund_id} rejected.")
    );
    stack
        .fake
        .wait_until("the requester told of the rejection", |_| {
            stack.fake.texts_to(ADMIN_A).iter().any(|t| {
                t == &format!("Your refund was rejected: rejected by admin {ADMIN_B} in the bot.")
            })
        })
        .await;
    assert_eq!(stack.available(ADMIN_A).await, Decimal::from(3));
    stack
}

async fn an_expired_hold_is_told_with_the_credits_returned(stack: Stack) -> Stack {
    let alice = user(1_101, "ru");
    stack.say(&alice, 1, "/start").await;
    stack.grant_quietly(1_101, "g-1101", 5).await;
    stack
        .accounts()
        .execute(Request {
            key: UserId::new(1_101).unwrap(),
            command: AccountCommand::PlaceHold {
                hold_id: HoldId::new("job-1101".to_string()).unwrap(),
                amount: Amount::new(Decimal::from(2)).unwrap(),
                ttl_seconds: 1,
                reason: Reason::new("render".to_string()).unwrap(),
            },
            command_id: None,
            metadata: Metadata::by(Actor::system("test")),
        })
        .await
        .unwrap();
    stack
        .fake
        .wait_until("the expiry notice", |_| {
            stack
                .fake
                .texts_to(1_101)
                .iter()
                .any(|t| t == "Задача не завершилась вовремя; 2.00 кредитов из резерва возвращены.")
        })
        .await;
    assert_eq!(stack.available(1_101).await, Decimal::from(5));
    stack
}

async fn a_plan_ending_within_three_days_is_told_once(stack: Stack) -> Stack {
    let alice = user(1_201, "en");
    stack.say(&alice, 1, "/start").await;
    let paid = Ledger::<Subscriptions>::new(stack.store.clone(), stack.config.clone())
        .execute(Request {
            key: UserId::new(1_201).unwrap(),
            command: SubscriptionCommand::Pay {
                payment_id: PaymentId::new("basic-1201".to_string()).unwrap(),
                plan: PlanId::new("basic".to_string()).unwrap(),
            },
            command_id: Some("pay:basic-1201".into()),
            metadata: Metadata::by(Actor::system("test")),
        })
        .await
        .unwrap();
    let period_end = paid.view.period_end.unwrap();
    stack
        .projector
        .wait_for("subscriptions", paid.position, Duration::from_secs(10))
        .await
        .unwrap();
    // A notifier of its own, swept at chosen times (the running one sweeps at now).
    let notifier = tally_bot::notifier::Notifier::new(
        Arc::new(tally_bot::Context::new(
            stack.ledgers.clone(),
            stack.projector.clone(),
            HashSet::new(),
        )),
        tally_bot::client(&bot_settings(&stack.fake)),
    );
    let four_days_before = period_end - chrono::Duration::days(4);
    assert_eq!(notifier.sweep_expiring(four_days_before).await.unwrap(), 0);
    let two_days_before = period_end - chrono::Duration::days(2);
    assert_eq!(notifier.sweep_expiring(two_days_before).await.unwrap(), 1);
    assert_eq!(
        notifier.sweep_expiring(two_days_before).await.unwrap(),
        0,
        "once"
    );
    let told: Vec<String> = stack
        .fake
        .texts_to(1_201)
        .into_iter()
        .filter(|t| t.starts_with("Your plan basic ends on"))
        .collect();
    assert_eq!(
        told,
        vec![format!(
            "Your plan basic ends on {}. Renew it with /plans.",
            period_end.format("%Y-%m-%d %H:%M")
        )]
    );
    stack
}

/// A user who blocked the bot (403 for ever) is recorded as undeliverable at once; a
/// chat whose sends fail for a passing reason (502 twice) is retried on its own and
/// told once; everyone else is told meanwhile, and the notifier keeps going.
async fn one_unreachable_chat_never_holds_the_notifier_back(stack: Stack) -> Stack {
    stack.fake.fail_sends_to(
        801,
        u32::MAX,
        403,
        "Forbidden: bot can't initiate conversation with a user",
    );
    stack.fake.fail_sends_to(802, 2, 502, "Bad Gateway");
    let credits = || Purpose::Credits(Amount::new(Decimal::from(20)).unwrap());
    for user in [801, 802, 803] {
        pay_by_webhook(&stack, user, &format!("oxa-{user}"), credits(), 1).await;
    }
    let told = "Your top-up arrived: +20.00 credits.";
    stack.fake.wait_texts(803, 1).await;
    stack.fake.wait_texts(802, 1).await;
    assert_eq!(
        stack.fake.texts_to(802),
        [told],
        "told once after the retries"
    );
    assert_eq!(stack.fake.texts_to(803), [told]);
    assert!(stack.fake.texts_to(801).is_empty());
    // The blocked user's notice is on record as undeliverable, and the notifier went on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        let outcome: Option<String> =
            sqlx::query_scalar("SELECT outcome FROM bot_notifications WHERE user_id = 801")
                .fetch_optional(stack.projector.pool())
                .await
                .unwrap();
        if let Some(outcome) = outcome {
            break outcome;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "801's notice never recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(outcome.starts_with("undeliverable"), "{outcome}");
    let refused_sends = stack
        .fake
        .calls_of("sendMessage")
        .iter()
        .filter(|c| c.params["chat_id"] == 801)
        .count();
    assert_eq!(refused_sends, 1, "a refusal for good is not retried");
    pay_by_webhook(&stack, 803, "oxa-803-again", credits(), 1).await;
    stack.fake.wait_texts(803, 2).await;
    // The checkpoint moved past every event, the unreachable user's included.
    let head = stack.store.last_position().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let checkpoint: i64 =
            sqlx::query_scalar("SELECT checkpoint FROM projections WHERE name = 'notifier'")
                .fetch_one(stack.projector.pool())
                .await
                .unwrap();
        if checkpoint as u64 >= head {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notifier's checkpoint is stuck at {checkpoint} (head {head})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack
}

/// A user has at most five unpaid invoices: asking for more fails the oldest, whose
/// checkout is then refused.
async fn unpaid_invoices_do_not_pile_up(stack: Stack) -> Stack {
    let carol = user(901, "en");
    stack.say(&carol, 1, "/start").await;
    let mut payloads = Vec::new();
    for _ in 0..7 {
        let invoice = invoice_for_pack(&stack, &carol, "pack_5").await;
        payloads.push(invoice["payload"].as_str().unwrap().to_string());
        // Each request sees the ones before it in the read model.
        let head = stack.store.last_position().await.unwrap();
        stack
            .projector
            .wait_for("payments", head, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let mut failed = Vec::new();
    for payload in &payloads {
        if stack
            .count(&format!("payment-{payload}"), "payment.failed")
            .await
            == 1
        {
            failed.push(payload.clone());
        }
    }
    assert_eq!(failed, payloads[..2], "the two oldest expired");
    stack
        .fake
        .push(pre_checkout(&carol, "pc-old", &payloads[0], 50));
    assert_eq!(checkout_answer(&stack, "pc-old").await["ok"], false);
    stack
        .fake
        .push(pre_checkout(&carol, "pc-new", &payloads[6], 50));
    assert_eq!(checkout_answer(&stack, "pc-new").await["ok"], true);
    stack
}

/// Self-approval compares people: a refund requested through the API with admin A's key
/// name (`ops-alice`, linked to A's Telegram id) cannot be approved by A in the bot;
/// admin B approves it.
async fn a_refund_an_admin_requested_through_the_api_is_not_theirs_to_approve_in_the_bot(
    stack: Stack,
) -> Stack {
    let admin_a = user(ADMIN_A, "en");
    let admin_b = user(ADMIN_B, "en");
    let owner = user(905, "en");
    stack.say(&owner, 1, "/start").await;
    stack.grant(905, "g-905", 5).await;
    stack.spend(905, "job-905", 2, "render").await;
    let ask = tally_domain::refund::RefundAsk {
        user_id: UserId::new(905).unwrap(),
        reference: "debit:job-905".into(),
        amount: Amount::new(Decimal::from(2)).unwrap(),
        reason: Reason::new("asked for the user".to_string()).unwrap(),
        requested_by: "ops-alice".into(),
    };
    tally_ledger::workflows::request_refund(
        &stack.ledgers.accounts,
        &stack.ledgers.refunds,
        &stack.config,
        tally_domain::values::RefundId::new("api-905".to_string()).unwrap(),
        ask,
        Metadata::by(Actor::new(tally_store::ActorKind::Admin, "ops-alice")),
    )
    .await
    .unwrap();
    let before = stack.fake.texts_to(ADMIN_A).len();
    stack
        .fake
        .push(button(&admin_a, "q-linked", 8, "ra:api-905"));
    let refused = stack.fake.wait_texts(ADMIN_A, before + 1).await[before].clone();
    assert!(refused.starts_with("Not done:"), "{refused}");
    assert_eq!(stack.count("refund-api-905", "refund.approved").await, 0);
    let before = stack.fake.texts_to(ADMIN_B).len();
    stack
        .fake
        .push(button(&admin_b, "q-other", 9, "ra:api-905"));
    stack.fake.wait_texts(ADMIN_B, before + 1).await;
    assert_eq!(stack.count("refund-api-905", "refund.approved").await, 1);
    stack
}

/// A user with a plan and a slot with two destinations (a channel, and a forum topic).
async fn a_plan_and_a_slot(stack: &Stack, user: i64, slot: &str) -> Vec<Destination> {
    let paid = stack
        .ledgers
        .subscriptions
        .command(
            UserId::new(user).unwrap(),
            SubscriptionCommand::Pay {
                payment_id: PaymentId::new(format!("plan-{user}")).unwrap(),
                plan: PlanId::new("basic".to_string()).unwrap(),
            },
            Metadata::by(Actor::system("test")),
        )
        .await
        .unwrap();
    let destinations = vec![
        Destination {
            chat_id: -100_500 - user,
            topic_id: None,
        },
        Destination {
            chat_id: -100_600 - user,
            topic_id: Some(17),
        },
    ];
    let configured = stack
        .ledgers
        .slots
        .command(
            SlotId::new(slot.to_string()).unwrap(),
            SlotCommand::Configure(SlotConfig {
                user_id: UserId::new(user).unwrap(),
                content: format!("Ad of {user}"),
                destinations: destinations.clone(),
                photo: None,
                buttons: Vec::new(),
            }),
            Metadata::by(Actor::system("test")),
        )
        .await
        .unwrap();
    for (name, position) in [
        ("subscriptions", paid.position),
        ("posts", configured.position),
    ] {
        stack
            .projector
            .wait_for(name, position, Duration::from_secs(10))
            .await
            .unwrap();
    }
    destinations
}

/// A poster as `tally serve` makes one, paced for tests (the fake has no limits).
fn poster(stack: &Stack) -> tally_bot::poster::Poster {
    tally_bot::poster::Poster::new(
        Arc::new(tally_bot::Context::new(
            stack.ledgers.clone(),
            stack.projector.clone(),
            HashSet::new(),
        )),
        tally_bot::poster::client(&bot_settings(&stack.fake)),
        tally_bot::poster::PosterSettings {
            per_second: 1_000,
            chat_gap: Duration::from_millis(10),
            ..tally_bot::poster::PosterSettings::default()
        },
    )
}

fn sends_to(stack: &Stack, chat: i64) -> Vec<fake_telegram::Call> {
    stack
        .fake
        .calls_of("sendMessage")
        .into_iter()
        .filter(|c| c.params["chat_id"] == json!(chat))
        .collect()
}

/// A cycle posts each due slot once to each destination (a forum topic with its
/// thread id); a second pass, and a second poster, post nothing again; every post is
/// on record as started and succeeded.
async fn a_cycle_posts_each_destination_once(stack: Stack) -> Stack {
    let destinations = a_plan_and_a_slot(&stack, 1_301, "ad-1301").await;
    let cycle = 1_000;
    let report = poster(&stack).post_cycle(cycle, false).await.unwrap();
    assert_eq!((report.posted, report.failed, report.skipped), (2, 0, 0));
    // Again (the posts read model may not have every success yet: the log refuses the
    // start, so it is skipped, not sent).
    let again = poster(&stack).post_cycle(cycle, false).await.unwrap();
    assert_eq!((again.posted, again.failed), (0, 0), "{again:?}");
    for d in &destinations {
        let sent = sends_to(&stack, d.chat_id);
        assert_eq!(sent.len(), 1, "one post to {d}");
        assert_eq!(sent[0].params["text"], "Ad of 1301");
        assert_eq!(
            sent[0].params.get("message_thread_id").cloned(),
            d.topic_id.map(|t| json!(t)),
            "{d}"
        );
    }
    assert_eq!(stack.count("slot-ad-1301", "slot.post_started").await, 2);
    assert_eq!(stack.count("slot-ad-1301", "slot.post_attempted").await, 2);
    stack
}

/// A post started and never recorded (the poster died between sending and
/// recording) is not sent again in its cycle, by a new poster; the other destination
/// is posted; the next cycle posts both.
async fn a_post_with_an_unknown_outcome_is_not_doubled_after_a_crash(stack: Stack) -> Stack {
    let destinations = a_plan_and_a_slot(&stack, 1_302, "ad-1302").await;
    let cycle = 2_000;
    let first = destinations[0];
    let attempt_id = tally_domain::cycle::attempt_id(cycle, &first, 1);
    stack
        .ledgers
        .slots
        .execute(Request {
            key: SlotId::new("ad-1302".to_string()).unwrap(),
            command: SlotCommand::StartPost {
                attempt_id: attempt_id.clone(),
                cycle,
                destination: first,
                coverage: tally_domain::slot::SlotCoverage::Covered,
            },
            command_id: Some(format!("start:{attempt_id}")),
            metadata: Metadata::by(Actor::system("poster")),
        })
        .await
        .unwrap();
    let report = poster(&stack).post_cycle(cycle, false).await.unwrap();
    assert_eq!((report.posted, report.skipped), (1, 1), "{report:?}");
    assert!(sends_to(&stack, first.chat_id).is_empty(), "not doubled");
    assert_eq!(sends_to(&stack, destinations[1].chat_id).len(), 1);
    let next = poster(&stack).post_cycle(cycle + 1, false).await.unwrap();
    assert_eq!(next.posted, 2, "{next:?}");
    stack
}

/// Telegram's errors by class: a chat the bot was removed from is a failed attempt on
/// record (no retry loop); a server error is retried and then posts.
async fn a_failed_post_is_on_record_by_its_class(stack: Stack) -> Stack {
    let destinations = a_plan_and_a_slot(&stack, 1_303, "ad-1303").await;
    let (removed, flaky) = (destinations[0], destinations[1]);
    stack.fake.fail_sends_to(
        removed.chat_id,
        10,
        403,
        "Forbidden: bot was kicked from the channel chat",
    );
    stack
        .fake
        .fail_sends_to(flaky.chat_id, 1, 500, "Internal Server Error");
    let report = poster(&stack).post_cycle(3_000, false).await.unwrap();
    assert_eq!((report.posted, report.failed), (1, 1), "{report:?}");
    assert_eq!(sends_to(&stack, removed.chat_id).len(), 1, "no retry loop");
    assert_eq!(sends_to(&stack, flaky.chat_id).len(), 2, "retried once");
    let attempts: Vec<Value> = stack
        .events_of("slot-ad-1303")
        .await
        .into_iter()
        .filter(|e| e.event_type == "slot.post_attempted")
        .map(|e| e.payload)
        .collect();
    let kinds: Vec<Option<&str>> = attempts.iter().map(|a| a["error_kind"].as_str()).collect();
    assert!(kinds.contains(&Some("no_rights")), "{attempts:?}");
    assert!(kinds.contains(&Some("transient")), "{attempts:?}");
    assert!(
        attempts.iter().any(|a| a["outcome"] == "succeeded"),
        "{attempts:?}"
    );
    // The chat the bot was removed from is paused: the next cycle sends nothing there.
    assert_eq!(
        stack.count("slot-ad-1303", "slot.destination_paused").await,
        1
    );
    let next = poster(&stack).post_cycle(3_001, false).await.unwrap();
    assert_eq!((next.posted, next.skipped), (1, 1), "{next:?}");
    assert_eq!(sends_to(&stack, removed.chat_id).len(), 1, "paused");
    // The owner is told, once, what to fix.
    let told = stack.fake.wait_texts(1_303, 1).await;
    assert_eq!(
        told,
        vec![format!(
            "Your ad ad-1303 is no longer posted to chat {}: the bot was removed there or \
             may not post. Add the bot back with the right to post (or reopen the topic), \
             then save the ad again.",
            removed.chat_id
        )]
    );
    stack
}

/// `tally serve`'s poster role, as the app wires it: with a token, no dispatcher
/// needed, it posts the current cycle's due slots (the clock set near the cycle's end,
/// so the posts spread over the cycle are all due at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_poster_role_posts_the_current_cycle() {
    let database = tally_store::testing::Backend::Sqlite.database().await;
    let fake = FakeTelegram::start().await;
    let period = 3_600;
    let now = chrono::Utc::now();
    let cycle = tally_domain::cycle::cycle_at(now, period);
    let late_in_cycle =
        tally_domain::cycle::cycle_start(cycle + 1, period) - chrono::Duration::seconds(1);
    let app = tally_app::App {
        roles: tally_app::Roles {
            api: false,
            projector: true,
            reactor: false,
        },
        poster: Some((
            bot_settings(&fake),
            tally_bot::poster::PosterSettings::new(period),
        )),
        clock: tally_ledger::Clock::from_fn(move || late_in_cycle),
        ..tally_app::App::new(&database.url)
    };
    let running = tally_app::start(app, None).await.unwrap();
    assert!(running.roles().contains(&"poster"), "{:?}", running.roles());
    let stack_like = running.ledgers.clone();
    let paid = stack_like
        .subscriptions
        .command(
            UserId::new(1_401).unwrap(),
            SubscriptionCommand::Pay {
                payment_id: PaymentId::new("plan-1401".to_string()).unwrap(),
                plan: PlanId::new("basic".to_string()).unwrap(),
            },
            Metadata::by(Actor::system("test")),
        )
        .await
        .unwrap();
    let chats = [-100_901, -100_902];
    stack_like
        .slots
        .command(
            SlotId::new("ad-1401".to_string()).unwrap(),
            SlotCommand::Configure(SlotConfig {
                user_id: UserId::new(1_401).unwrap(),
                content: "Poster role".into(),
                destinations: chats
                    .iter()
                    .map(|&chat_id| Destination {
                        chat_id,
                        topic_id: None,
                    })
                    .collect(),
                photo: None,
                buttons: Vec::new(),
            }),
            Metadata::by(Actor::system("test")),
        )
        .await
        .unwrap();
    assert!(paid.position > 0);
    fake.wait_until("both posts", |calls| {
        chats.iter().all(|chat| {
            calls.iter().any(|c| {
                c.method == "sendMessage" && !c.refused && c.params["chat_id"] == json!(chat)
            })
        })
    })
    .await;
    running.stop().await.unwrap();
    for chat in chats {
        assert_eq!(
            fake.texts_to(chat),
            vec!["Poster role".to_string()],
            "{chat}"
        );
    }
    database.drop_database().await;
}

/// Telegram's 429: the poster waits exactly `retry_after`, records the attempt that
/// was refused, and posts with the next; it does not spin.
async fn a_rate_limited_post_waits_and_then_posts(stack: Stack) -> Stack {
    let destinations = a_plan_and_a_slot(&stack, 1_304, "ad-1304").await;
    stack.fake.throttle_next("sendMessage", 1);
    let started = std::time::Instant::now();
    let report = poster(&stack).post_cycle(4_000, false).await.unwrap();
    assert_eq!((report.posted, report.failed), (2, 0), "{report:?}");
    let sends: usize = destinations
        .iter()
        .map(|d| sends_to(&stack, d.chat_id).len())
        .sum();
    // Three calls in all: one refused with 429, then one per destination (the
    // throttle adaptor may wait it out itself; either way no spin and no double).
    assert!(sends <= 3, "{sends} sends");
    for d in &destinations {
        assert_eq!(
            stack.fake.texts_to(d.chat_id),
            vec!["Ad of 1304".to_string()],
            "{d}"
        );
    }
    assert!(started.elapsed() >= Duration::from_secs(1), "waited");
    stack
}

/// A group upgraded to a supergroup (400 with `migrate_to_chat_id`): the destination
/// follows the new chat (on record), the post goes there in the same cycle, and the
/// next cycle posts to the new chat only.
async fn a_migrated_chat_is_followed(stack: Stack) -> Stack {
    let destinations = a_plan_and_a_slot(&stack, 1_305, "ad-1305").await;
    let old = destinations[0];
    let new_chat = -1_007_771_305;
    stack.fake.migrate_chat(old.chat_id, new_chat);
    let report = poster(&stack).post_cycle(5_000, false).await.unwrap();
    assert_eq!((report.posted, report.failed), (2, 0), "{report:?}");
    assert_eq!(
        stack.fake.texts_to(new_chat),
        vec!["Ad of 1305".to_string()]
    );
    assert!(stack.fake.texts_to(old.chat_id).is_empty());
    assert_eq!(
        stack.count("slot-ad-1305", "slot.destination_moved").await,
        1
    );
    let head = stack.store.last_position().await.unwrap();
    stack
        .projector
        .wait_for("posts", head, Duration::from_secs(10))
        .await
        .unwrap();
    let next = poster(&stack).post_cycle(5_001, false).await.unwrap();
    assert_eq!(next.posted, 2, "{next:?}");
    assert_eq!(stack.fake.texts_to(new_chat).len(), 2);
    assert_eq!(
        sends_to(&stack, old.chat_id).len(),
        1,
        "the old chat once only"
    );
    stack
}

/// A deleted forum topic (Telegram: "message thread not found"): the post goes to the
/// forum's General topic at once, posted WITHOUT `message_thread_id`; the destination
/// moves there for good (on record with its reason), the owner is told once, and the
/// next cycle posts there directly.
async fn a_deleted_topic_falls_back_to_the_general_topic(stack: Stack) -> Stack {
    let destinations = a_plan_and_a_slot(&stack, 1_306, "ad-1306").await;
    let topic = destinations[1];
    assert_eq!(topic.topic_id, Some(17));
    stack.fake.fail_topic(
        topic.chat_id,
        17,
        u32::MAX,
        400,
        "Bad Request: message thread not found",
    );
    let report = poster(&stack).post_cycle(6_000, false).await.unwrap();
    assert_eq!((report.posted, report.failed), (2, 0), "{report:?}");
    let sent = sends_to(&stack, topic.chat_id);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].params["message_thread_id"], json!(17));
    assert!(sent[0].refused);
    assert!(
        sent[1].params.get("message_thread_id").is_none(),
        "General is posted to without a thread id: {:?}",
        sent[1].params
    );
    assert!(!sent[1].refused);
    let moved: Vec<Value> = stack
        .events_of("slot-ad-1306")
        .await
        .into_iter()
        .filter(|e| e.event_type == "slot.destination_moved")
        .map(|e| e.payload)
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0]["reason"], "topic_deleted");
    assert_eq!(moved[0]["to"], json!({"chat_id": topic.chat_id}));
    let attempts: Vec<Value> = stack
        .events_of("slot-ad-1306")
        .await
        .into_iter()
        .filter(|e| e.event_type == "slot.post_attempted")
        .map(|e| e.payload)
        .collect();
    assert!(
        attempts
            .iter()
            .any(|a| a["error_kind"] == "topic_deleted" && a["destination"]["topic_id"] == 17),
        "{attempts:?}"
    );
    assert!(
        attempts.iter().any(|a| a["outcome"] == "succeeded"
            && a["destination"] == json!({"chat_id": topic.chat_id})),
        "the tier used is on record: {attempts:?}"
    );
    let told = stack.fake.wait_texts(1_306, 1).await;
    assert!(
        told[0].contains("was deleted") && told[0].contains("General"),
        "{told:?}"
    );
    let head = stack.store.last_position().await.unwrap();
    stack
        .projector
        .wait_for("posts", head, Duration::from_secs(10))
        .await
        .unwrap();
    let next = poster(&stack).post_cycle(6_001, false).await.unwrap();
    assert_eq!((next.posted, next.failed), (2, 0), "{next:?}");
    let sent = sends_to(&stack, topic.chat_id);
    assert_eq!(sent.len(), 3);
    assert!(sent[2].params.get("message_thread_id").is_none() && !sent[2].refused);
    assert_eq!(stack.fake.texts_to(1_306).len(), 1, "told once");
    stack
}

/// Telegram tells the bot it was removed from a channel (`my_chat_member`): every
/// slot's destination there is paused before the next cycle tries it, the owner is
/// told, and the cycle posts only where the bot still may. A demotion that keeps the
/// right to post changes nothing.
async fn the_bot_removed_from_a_chat_pauses_its_destinations_before_the_next_cycle(
    stack: Stack,
) -> Stack {
    let destinations = a_plan_and_a_slot(&stack, 1_307, "ad-1307").await;
    let (gone, kept) = (destinations[0], destinations[1]);
    let owner = user(1_307, "en");
    stack.fake.push(my_chat_member(
        &owner,
        kept.chat_id,
        "supergroup",
        "administrator",
        "member",
    ));
    stack.fake.push(my_chat_member(
        &owner,
        gone.chat_id,
        "channel",
        "administrator",
        "left",
    ));
    let told = stack.fake.wait_texts(1_307, 1).await;
    assert!(
        told[0].contains(&format!("chat {}", gone.chat_id)),
        "{told:?}"
    );
    let paused: Vec<Value> = stack
        .events_of("slot-ad-1307")
        .await
        .into_iter()
        .filter(|e| e.event_type == "slot.destination_paused")
        .map(|e| e.payload)
        .collect();
    assert_eq!(paused.len(), 1, "{paused:?}");
    assert_eq!(paused[0]["reason"], "bot_removed");
    assert_eq!(paused[0]["destination"], json!({"chat_id": gone.chat_id}));
    let report = poster(&stack).post_cycle(7_000, false).await.unwrap();
    assert_eq!((report.posted, report.skipped), (1, 1), "{report:?}");
    assert!(sends_to(&stack, gone.chat_id).is_empty());
    assert_eq!(sends_to(&stack, kept.chat_id).len(), 1);
    stack
}

/// A post Telegram took but never answered (the request timed out once sent): it may
/// be in the channel, so it is recorded with outcome `unknown` and not sent again in
/// the cycle, by this poster or another; the next cycle posts as usual.
async fn a_post_without_an_answer_is_not_sent_again_in_its_cycle(stack: Stack) -> Stack {
    let destinations = a_plan_and_a_slot(&stack, 1_308, "ad-1308").await;
    let silent = destinations[0];
    stack.fake.hang_sends_to(silent.chat_id);
    let report = poster(&stack).post_cycle(8_000, false).await.unwrap();
    assert_eq!((report.posted, report.unknown), (1, 1), "{report:?}");
    stack.fake.release(silent.chat_id);
    let again = poster(&stack).post_cycle(8_000, false).await.unwrap();
    assert_eq!((again.posted, again.unknown), (0, 0), "{again:?}");
    assert_eq!(sends_to(&stack, silent.chat_id).len(), 1, "sent once");
    let outcomes: Vec<Value> = stack
        .events_of("slot-ad-1308")
        .await
        .into_iter()
        .filter(|e| e.event_type == "slot.post_attempted")
        .map(|e| e.payload)
        .filter(|a| a["destination"]["chat_id"] == silent.chat_id)
        .collect();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["outcome"], "unknown");
    assert_eq!(outcomes[0]["error_kind"], "outcome_unknown");
    let next = poster(&stack).post_cycle(8_001, false).await.unwrap();
    assert_eq!(next.posted, 2, "{next:?}");
    stack
}

/// Sends an update as `from` and waits for the bot's next text to them.
async fn send_and_wait(stack: &Stack, from: &Value, update: Value) -> String {
    let chat = from["id"].as_i64().unwrap();
    let before = stack.fake.texts_to(chat).len();
    stack.fake.push(update);
    stack.fake.wait_texts(chat, before + 1).await[before].clone()
}

/// `/ads` end to end: a user with a plan makes an ad in the chat (a photo with its
/// caption and a link button), names destinations as users do (an @username, a
/// forwarded channel post, a forum topic link); each is checked with Telegram before
/// it is accepted, and refused with the reason and the fix (no rights, unknown chat,
/// a topic that does not exist). `/done` puts the ad in the ledger, the poster posts
/// the photo with its button to each destination (the topic with its thread id), a
/// paused ad is not posted, and an admin lowering the plan pauses the newest ad
/// beyond it and tells the user.
async fn an_ad_is_made_in_the_chat_with_each_destination_checked_first(stack: Stack) -> Stack {
    let owner_id = 1_401;
    let owner = user(owner_id, "en");
    stack
        .ledgers
        .subscriptions
        .command(
            UserId::new(owner_id).unwrap(),
            SubscriptionCommand::Pay {
                payment_id: PaymentId::new("plan-1401".to_string()).unwrap(),
                plan: PlanId::new("pro".to_string()).unwrap(),
            },
            Metadata::by(Actor::system("test")),
        )
        .await
        .unwrap();
    let channel = |id, username, title, bot_status, can_post| FakeChat {
        id,
        kind: "channel",
        username,
        title,
        bot_status,
        can_post,
        topics: vec![],
    };
    stack.fake.add_chat(channel(
        -100_701,
        Some("bread_news"),
        "Bread news",
        "administrator",
        true,
    ));
    stack.fake.add_chat(channel(
        -100_702,
        Some("muted_news"),
        "Muted news",
        "administrator",
        false,
    ));
    stack.fake.add_chat(channel(
        -100_704,
        None,
        "Private bakery",
        "administrator",
        true,
    ));
    stack.fake.add_chat(FakeChat {
        id: -100_703,
        kind: "supergroup",
        username: None,
        title: "Bakers forum",
        bot_status: "member",
        can_post: false,
        topics: vec![5],
    });
    stack.say(&owner, 1, "/start").await;
    let listed = say_until(&stack, &owner, "/ads", "0 of 3").await;
    assert!(
        listed.contains("Your ads: 0 of 3 slots in use."),
        "{listed}"
    );
    assert!(buttons(&last_message_to(&stack.fake, owner_id)).contains(&"ad:new:".to_string()));
    let asked = send_and_wait(&stack, &owner, button(&owner, "q-ad-1", 2, "ad:new:")).await;
    assert!(asked.starts_with("Send the ad"), "{asked}");
    let caption = "Fresh bread every morning\nOrder - https://bread.example/order";
    let next = send_and_wait(
        &stack,
        &owner,
        photo_message(&owner, 3, caption, "photo-big"),
    )
    .await;
    assert!(next.starts_with("Now where to post it"), "{next}");
    // Refused before they are accepted, each with its fix.
    let refused = stack.say(&owner, 4, "@muted_news").await;
    assert!(
        refused.contains("may not post in Muted news") && refused.contains("Post messages"),
        "{refused}"
    );
    let refused = stack.say(&owner, 5, "https://t.me/nobody_here").await;
    assert!(refused.starts_with("I can't find that chat"), "{refused}");
    let refused = stack.say(&owner, 6, "t.me/c/703/9").await;
    assert!(
        refused.contains("topic does not exist in Bakers forum"),
        "{refused}"
    );
    // Accepted.
    let added = stack.say(&owner, 7, "@bread_news").await;
    assert!(
        added.starts_with("Added Bread news (chat -100701)"),
        "{added}"
    );
    let added = send_and_wait(
        &stack,
        &owner,
        forwarded_from_channel(&owner, 8, -100_704, "Private bakery"),
    )
    .await;
    assert!(
        added.starts_with("Added Private bakery (chat -100704)"),
        "{added}"
    );
    let added = stack.say(&owner, 9, "https://t.me/c/703/5").await;
    assert!(
        added.starts_with("Added Bakers forum (chat -100703 topic 5)"),
        "{added}"
    );
    // Nothing in the ledger until /done.
    let configured = |events: &[tally_store::RecordedEvent]| {
        events
            .iter()
            .filter(|e| e.event_type == "slot.configured")
            .count()
    };
    let before = stack.store.read_all(0, 10_000).await.unwrap();
    assert_eq!(configured(&before), 0);
    let saved = stack.say(&owner, 10, "/done").await;
    assert!(saved.starts_with("Saved: ad ad-1401-"), "{saved}");
    let slot_id = saved
        .trim_start_matches("Saved: ad ")
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let events = stack.events_of(&format!("slot-{slot_id}")).await;
    assert_eq!(configured(&events), 1);
    let config = &events[0].payload;
    assert_eq!(config["user_id"], owner_id);
    assert_eq!(config["content"], "Fresh bread every morning");
    assert_eq!(config["photo"], "photo-big");
    assert_eq!(
        config["buttons"],
        json!([{"label": "Order", "url": "https://bread.example/order"}])
    );
    assert_eq!(
        config["destinations"],
        json!([{"chat_id": -100_701}, {"chat_id": -100_704}, {"chat_id": -100_703, "topic_id": 5}])
    );
    assert_eq!(events[0].metadata.actor.id, owner_id.to_string());

    // The poster posts the photo with its button, the topic with its thread id.
    let head = stack.store.last_position().await.unwrap();
    for name in ["posts", "subscriptions"] {
        stack
            .projector
            .wait_for(name, head, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let report = poster(&stack).post_cycle(9_000, false).await.unwrap();
    assert_eq!(
        report.posted,
        3,
        "{report:?} {:?}",
        stack.fake.calls_of("sendPhoto")
    );
    let photos = stack.fake.calls_of("sendPhoto");
    assert_eq!(photos.len(), 3, "{photos:?}");
    for call in &photos {
        assert_eq!(call.params["photo"], "photo-big");
        assert_eq!(call.params["caption"], "Fresh bread every morning");
        assert_eq!(
            call.params["reply_markup"]["inline_keyboard"][0][0]["url"],
            "https://bread.example/order"
        );
    }
    let topic = photos
        .iter()
        .find(|c| c.params["chat_id"] == json!(-100_703))
        .unwrap();
    assert_eq!(topic.params["message_thread_id"], json!(5));

    // Paused by its owner: listed so, not posted.
    let listed = stack.say(&owner, 11, "/ads").await;
    assert!(
        listed.contains(&format!("{slot_id} (active) [photo]")),
        "{listed}"
    );
    assert!(listed.contains("last cycle: posted to 3 of 3"), "{listed}");
    let paused = send_and_wait(
        &stack,
        &owner,
        button(&owner, "q-ad-2", 12, &format!("ad:pause:{slot_id}")),
    )
    .await;
    assert_eq!(paused, format!("Ad {slot_id} is paused."));
    let report = poster(&stack).post_cycle(9_001, false).await.unwrap();
    assert_eq!(report.posted, 0, "{report:?}");
    assert_eq!(stack.fake.calls_of("sendPhoto").len(), 3);
    let resumed = send_and_wait(
        &stack,
        &owner,
        button(&owner, "q-ad-3", 13, &format!("ad:resume:{slot_id}")),
    )
    .await;
    assert_eq!(resumed, format!("Ad {slot_id} is posted again."));
    // Someone else's ad: refused.
    let other = user(1_402, "en");
    stack.say(&other, 1, "/start").await;
    let refused = send_and_wait(
        &stack,
        &other,
        button(&other, "q-ad-4", 2, &format!("ad:del:{slot_id}")),
    )
    .await;
    assert!(
        refused.contains(&format!("you have no ad {slot_id}")),
        "{refused} {:?}",
        stack.fake.texts_to(ADMIN_A)
    );

    // A second ad, then an admin lowers the plan to one slot: the newest is paused and
    // the owner told.
    stack
        .ledgers
        .slots
        .command(
            SlotId::new("ad-1401-second".to_string()).unwrap(),
            SlotCommand::Configure(SlotConfig::text(
                UserId::new(owner_id).unwrap(),
                "Second ad",
                vec![Destination {
                    chat_id: -100_701,
                    topic_id: None,
                }],
            )),
            Metadata::by(Actor::system("test")),
        )
        .await
        .unwrap();
    let admin = user(ADMIN_A, "en");
    let fixed = stack
        .say(
            &admin,
            500,
            "/fix_user_slots 1401 basic plan sold by mistake",
        )
        .await;
    assert!(fixed.contains("1401"), "{fixed}");
    stack
        .fake
        .wait_until("the owner told of the pause", |_| {
            stack
                .fake
                .texts_to(owner_id)
                .iter()
                .any(|t| t.starts_with("Your plan now gives 1 ad slots, so your ad ad-1401-second"))
        })
        .await;
    assert_eq!(stack.count("slot-ad-1401-second", "slot.paused").await, 1);
    assert_eq!(
        stack.count(&format!("slot-{slot_id}"), "slot.paused").await,
        1,
        "the older stays active"
    );
    stack
}

/// A press of a callback button under a channel post.
fn channel_button(from: &Value, query_id: &str, channel: i64, data: &str) -> Value {
    json!({"callback_query": {
        "id": query_id,
        "from": from,
        "chat_instance": format!("ci-{channel}"),
        "data": data,
        "message": {
            "message_id": 77,
            "date": 1_700_000_000,
            "chat": {"id": channel, "type": "channel", "title": "Bakery"},
            "text": "Learn to bake",
        }
    }})
}

/// The operator's campaign end to end: the rotation posts one post per cycle with its
/// call-to-action buttons (a callback button for a web link, a deep link into the
/// bot); a press is a click once however often Telegram delivers it, and the user is
/// taken to the link through the bot; a `/start` deep link is a click; a payment of
/// a user who clicked is that post's conversion, with its revenue, in the read model,
/// the bot's /stats and the admin API.
async fn a_click_then_a_payment_is_the_campaign_posts_conversion(stack: Stack) -> Stack {
    use tally_domain::campaign::{CampaignDef, CampaignPost, CtaButton, CtaTarget};
    let channel = -100_801;
    let def = CampaignDef {
        name: "Spring baking".into(),
        operator: UserId::new(ADMIN_A).unwrap(),
        posts: vec![
            CampaignPost {
                post_id: "p1".into(),
                content: "Learn to bake".into(),
                photo: None,
                buttons: vec![
                    CtaButton {
                        label: "Recipe".into(),
                        target: CtaTarget::Url("https://bake.example/recipe".into()),
                    },
                    CtaButton {
                        label: "Try the bot".into(),
                        target: CtaTarget::Start,
                    },
                ],
            },
            CampaignPost {
                post_id: "p2".into(),
                content: "Guide two".into(),
                photo: None,
                buttons: vec![],
            },
        ],
        channels: vec![Destination {
            chat_id: channel,
            topic_id: None,
        }],
    };
    let by = || Metadata::by(Actor::system("test"));
    tally_ledger::workflows::define_campaign(&stack.ledgers, "spring", def.clone(), by())
        .await
        .unwrap();
    // Again (a restart applying tally.toml): nothing new.
    let before = stack.store.last_position().await.unwrap();
    tally_ledger::workflows::define_campaign(&stack.ledgers, "spring", def, by())
        .await
        .unwrap();
    assert_eq!(stack.store.last_position().await.unwrap(), before);
    for name in ["campaigns", "posts"] {
        stack
            .projector
            .wait_for(name, before, Duration::from_secs(10))
            .await
            .unwrap();
    }
    // Cycle 10 000 is post p1's turn (10 000 mod 2 = 0), 10 001 is p2's.
    let report = poster(&stack).post_cycle(10_000, false).await.unwrap();
    assert_eq!(report.posted, 1, "{report:?}");
    let posted = sends_to(&stack, channel);
    assert_eq!(posted[0].params["text"], "Learn to bake");
    let keyboard = &posted[0].params["reply_markup"]["inline_keyboard"];
    assert_eq!(keyboard[0][0]["callback_data"], "cta:spring:p1:0");
    assert_eq!(
        keyboard[1][0]["url"],
        "https://t.me/tally_test_bot?start=c-spring-p1"
    );
    poster(&stack).post_cycle(10_001, false).await.unwrap();
    assert_eq!(sends_to(&stack, channel)[1].params["text"], "Guide two");

    // A presses the web-link button; Telegram delivers the press twice.
    let (a, b) = (user(1_501, "en"), user(1_502, "en"));
    let press = stack
        .fake
        .push(channel_button(&a, "cq-1501", channel, "cta:spring:p1:0"));
    stack.fake.push(press);
    let answers = stack
        .fake
        .wait_until("both presses answered", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "answerCallbackQuery")
                .count()
                >= 2
        })
        .await;
    let answered: Vec<&fake_telegram::Call> = answers
        .iter()
        .filter(|c| c.method == "answerCallbackQuery")
        .collect();
    assert_eq!(
        answered[0].params["url"],
        "https://t.me/tally_test_bot?start=l-spring-p1-0"
    );
    assert!(
        stack.fake.texts_to(channel).len() == 2,
        "nothing said in the channel"
    );
    // The link opens the bot, which gives the page.
    stack.say(&a, 1, "/start l-spring-p1-0").await;
    let link = stack.fake.wait_texts(1_501, 2).await;
    assert_eq!(link[1], "Recipe: https://bake.example/recipe");
    // B comes by the deep link, then pays.
    stack.say(&b, 1, "/start c-spring-p1").await;
    pay_by_webhook(
        &stack,
        1_502,
        "pay-1502",
        Purpose::Credits(Amount::new(Decimal::from(20)).unwrap()),
        1,
    )
    .await;
    assert_eq!(
        stack.count("campaign-spring", "campaign.clicked").await,
        2,
        "one per press, one per start"
    );

    let head = stack.store.last_position().await.unwrap();
    stack
        .projector
        .wait_for("campaigns", head, Duration::from_secs(10))
        .await
        .unwrap();
    let figures = tally_projections::campaign_figures(
        stack.projector.pool(),
        stack.config.attribution_window_micros(),
    )
    .await
    .unwrap();
    let p1 = figures.iter().find(|f| f.post_id == "p1").unwrap();
    assert_eq!(
        (p1.posts, p1.clicks, p1.unique_users, p1.conversions),
        (1, 2, 2, 1),
        "{figures:?}"
    );
    assert_eq!(p1.revenue.get("XTR"), Some(&Decimal::from(100)));
    assert_eq!(p1.conversion_rate, Decimal::new(5, 1));
    let p2 = figures.iter().find(|f| f.post_id == "p2").unwrap();
    assert_eq!((p2.posts, p2.clicks, p2.conversions), (1, 0, 0));
    // Outside the window (a payment more than a microsecond after the click, with a
    // window of one): not attributed.
    let narrow = tally_projections::campaign_figures(stack.projector.pool(), 1)
        .await
        .unwrap();
    assert_eq!(narrow.iter().map(|f| f.conversions).sum::<i64>(), 0);
    // The admins' /stats says it.
    let admin = user(ADMIN_A, "en");
    let said = stack.say(&admin, 700, "/stats").await;
    assert!(
        said.contains(
            "spring/p1: posts 1, clicks 2, users 2, conversions 1 (50%), revenue 100 XTR"
        ),
        "{said}"
    );
    stack
}

/// Telegram's `TOPIC_CLOSED`: the destination is paused (no retry loop, nothing there
/// next cycle), the attempt is on record as `topic_closed`, the owner is told what to
/// fix; saving the ad again resumes it.
async fn a_closed_topic_is_paused_and_its_owner_told(stack: Stack) -> Stack {
    let destinations = a_plan_and_a_slot(&stack, 1_309, "ad-1309").await;
    let topic = destinations[1];
    stack.fake.fail_topic(
        topic.chat_id,
        17,
        u32::MAX,
        400,
        "Bad Request: TOPIC_CLOSED",
    );
    let report = poster(&stack).post_cycle(11_000, false).await.unwrap();
    assert_eq!((report.posted, report.failed), (1, 1), "{report:?}");
    assert_eq!(sends_to(&stack, topic.chat_id).len(), 1, "no retry loop");
    let paused: Vec<Value> = stack
        .events_of("slot-ad-1309")
        .await
        .into_iter()
        .filter(|e| e.event_type == "slot.destination_paused")
        .map(|e| e.payload)
        .collect();
    assert_eq!(paused.len(), 1, "{paused:?}");
    assert_eq!(paused[0]["reason"], "topic_closed");
    let told = stack.fake.wait_texts(1_309, 1).await;
    assert!(
        told[0].contains("the forum topic is closed") && told[0].contains("reopen the topic"),
        "{told:?}"
    );
    let next = poster(&stack).post_cycle(11_001, false).await.unwrap();
    assert_eq!((next.posted, next.skipped), (1, 1), "{next:?}");
    assert_eq!(sends_to(&stack, topic.chat_id).len(), 1, "paused");
    // Saved again (the owner reopened the topic): posted there again.
    let config = stack
        .ledgers
        .slots
        .load(&SlotId::new("ad-1309".to_string()).unwrap())
        .await
        .unwrap()
        .state
        .config
        .unwrap();
    stack
        .ledgers
        .slots
        .command(
            SlotId::new("ad-1309".to_string()).unwrap(),
            SlotCommand::Configure(config),
            Metadata::by(Actor::system("test")),
        )
        .await
        .unwrap();
    stack
        .fake
        .fail_topic(topic.chat_id, 17, 0, 400, "Bad Request: TOPIC_CLOSED");
    let resumed = poster(&stack).post_cycle(11_002, false).await.unwrap();
    assert_eq!(resumed.posted, 2, "{resumed:?}");
    stack
}

/// `/refund_payment`: the Stars go back (Telegram's `refundStarPayment` with the
/// user and the charge), the ledger reverses the payment and takes its credits back,
/// the user is told. Credits already spent: refused before any money moves, unless
/// the admin forces it into a negative balance.
async fn an_admin_refunds_a_stars_payment_and_its_credits_are_taken_back(stack: Stack) -> Stack {
    let admin = user(ADMIN_B, "en");
    let credits = || Purpose::Credits(Amount::new(Decimal::from(20)).unwrap());
    pay_by_webhook(&stack, 1_601, "pay-1601", credits(), 1).await;
    stack.fake.wait_texts(1_601, 1).await;
    let said = stack
        .say(&admin, 800, "/refund_payment pay-1601 changed their mind")
        .await;
    assert_eq!(
        said,
        "Refunded payment pay-1601 (tx-pay-1601): 20 credits taken back from user 1601; \
         available now 0."
    );
    let refunds = stack.fake.calls_of("refundStarPayment");
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].params["user_id"], 1_601);
    assert_eq!(
        refunds[0].params["telegram_payment_charge_id"],
        "tx-pay-1601"
    );
    let told = stack.fake.wait_texts(1_601, 2).await;
    assert_eq!(
        told[1],
        "Your payment pay-1601 was refunded; its 20.00 credits were taken back."
    );
    assert_eq!(stack.count("payment-pay-1601", "payment.reversed").await, 1);
    assert_eq!(stack.available(1_601).await, Decimal::ZERO);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stack.fake.texts_to(1_601).len(),
        2,
        "told once, as a refund"
    );
    // Again: the same answer, nothing more (no second refund at Telegram).
    let again = stack
        .say(&admin, 801, "/refund_payment pay-1601 changed their mind")
        .await;
    assert!(again.starts_with("Refunded payment pay-1601"), "{again}");
    assert_eq!(stack.fake.calls_of("refundStarPayment").len(), 1);
    assert_eq!(stack.count("payment-pay-1601", "payment.reversed").await, 1);

    // Spent: refused, no money moved; forced: refunded into a negative balance.
    pay_by_webhook(&stack, 1_602, "pay-1602", credits(), 1).await;
    stack.spend(1_602, "job-1602", 15, "a job").await;
    let refused = stack
        .say(&admin, 802, "/refund_payment pay-1602 duplicate")
        .await;
    assert!(
        refused.contains("user 1602 has spent the credits: 5 available of 20"),
        "{refused}"
    );
    assert_eq!(
        stack.fake.calls_of("refundStarPayment").len(),
        1,
        "no money moved"
    );
    assert_eq!(stack.count("payment-pay-1602", "payment.reversed").await, 0);
    let forced = stack
        .say(&admin, 803, "/refund_payment pay-1602 force duplicate")
        .await;
    assert!(forced.ends_with("available now -15."), "{forced}");
    assert_eq!(stack.fake.calls_of("refundStarPayment").len(), 2);
    assert_eq!(stack.available(1_602).await, Decimal::from(-15));
    // Not an admin: refused, nothing moved.
    let stranger = user(1_603, "en");
    stack.say(&stranger, 1, "/start").await;
    stack
        .say(&stranger, 2, "/refund_payment pay-1602 mine")
        .await;
    assert_eq!(stack.fake.calls_of("refundStarPayment").len(), 2);

    // From /user: a Refund button on the payment, then the reason.
    pay_by_webhook(&stack, 1_604, "pay-1604", credits(), 1).await;
    stack.fake.wait_texts(1_604, 1).await;
    let card = stack.say(&admin, 804, "/user 1604").await;
    assert!(card.contains("1604"), "{card}");
    let offered = buttons(&last_message_to(&stack.fake, ADMIN_B));
    assert_eq!(offered, vec!["rp:pay-1604"]);
    stack.fake.push(button(&admin, "q-rp", 805, "rp:pay-1604"));
    stack
        .fake
        .wait_until("the question why", |_| {
            stack
                .fake
                .texts_to(ADMIN_B)
                .last()
                .is_some_and(|t| t.starts_with("Why is payment pay-1604 refunded?"))
        })
        .await;
    let done = stack.say(&admin, 806, "asked twice by mistake").await;
    assert!(
        done.starts_with("Refunded payment pay-1604 (tx-pay-1604): 20 credits"),
        "{done}"
    );
    assert_eq!(stack.fake.calls_of("refundStarPayment").len(), 3);
    assert_eq!(stack.available(1_604).await, Decimal::ZERO);
    stack
}

/// Telegram's own refund (`refunded_payment` in the chat, delivered twice): the
/// payment reversed and its credits taken back once, the user told once; a refund
/// naming another charge changes nothing.
async fn a_refund_made_by_telegram_is_recorded_once(stack: Stack) -> Stack {
    let who = user(1_611, "en");
    pay_by_webhook(
        &stack,
        1_611,
        "pay-1611",
        Purpose::Credits(Amount::new(Decimal::from(20)).unwrap()),
        1,
    )
    .await;
    stack.fake.wait_texts(1_611, 1).await;
    let refunded = |message_id: i64, charge: &str| {
        json!({"message": {
            "message_id": message_id,
            "date": 1_700_000_000,
            "chat": {"id": 1_611, "type": "private", "first_name": "User1611"},
            "from": who,
            "refunded_payment": {
                "currency": "XTR",
                "total_amount": 100,
                "invoice_payload": "pay-1611",
                "telegram_payment_charge_id": charge,
            }
        }})
    };
    stack.fake.push(refunded(5, "tx-someone-else"));
    let update = stack.fake.push(refunded(6, "tx-pay-1611"));
    stack.fake.push(update);
    let told = stack.fake.wait_texts(1_611, 2).await;
    assert_eq!(
        told[1],
        "Your payment pay-1611 was refunded; its 20.00 credits were taken back."
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.count("payment-pay-1611", "payment.reversed").await, 1);
    assert_eq!(stack.available(1_611).await, Decimal::ZERO);
    assert_eq!(
        stack.fake.texts_to(1_611).len(),
        2,
        "told once: {:?}",
        stack.fake.texts_to(1_611)
    );
    stack
}

/// `/terms` and `/paysupport`, which Telegram requires of bots selling with Stars:
/// the operator's own text where set (English terms here), else the built-in one,
/// in the user's language.
async fn terms_and_paysupport_answer_in_the_users_language(stack: Stack) -> Stack {
    let (en, ru) = (user(1_621, "en"), user(1_622, "ru"));
    assert_eq!(stack.say(&en, 1, "/terms").await, OPERATOR_TERMS);
    assert!(
        stack
            .say(&en, 2, "/paysupport")
            .await
            .starts_with("Payment help:")
    );
    assert!(stack.say(&ru, 1, "/terms").await.starts_with("Условия:"));
    assert!(
        stack
            .say(&ru, 2, "/paysupport")
            .await
            .starts_with("Помощь с оплатой:")
    );
    stack
}

/// Telegram lists a Stars charge no payment records (money taken, nothing credited):
/// the notifier's daily reconciliation tells each admin once that day.
async fn the_daily_reconciliation_tells_the_admins_once(stack: Stack) -> Stack {
    stack.fake.add_star_payment("ch-lost-960", 960, 50);
    let notifier = tally_bot::notifier::Notifier::new(
        Arc::new(
            tally_bot::Context::new(
                stack.ledgers.clone(),
                stack.projector.clone(),
                HashSet::from([ADMIN_A, ADMIN_B]),
            )
            .with_providers(stack.running.state.as_ref().unwrap().providers.clone()),
        ),
        tally_bot::client(&bot_settings(&stack.fake)),
    );
    // Tomorrow: a day the running notifier has not reconciled yet.
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    notifier.reconcile_daily(tomorrow).await.unwrap();
    notifier.reconcile_daily(tomorrow).await.unwrap();
    for admin in [ADMIN_A, ADMIN_B] {
        let told: Vec<String> = stack
            .fake
            .texts_to(admin)
            .into_iter()
            .filter(|t| {
                t.starts_with(&format!(
                    "Reconciliation of stars on {}",
                    tomorrow.format("%Y-%m-%d")
                ))
            })
            .collect();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(
            told[0].contains("1 charge(s) of stars no payment records"),
            "{}",
            told[0]
        );
        assert!(told[0].contains("ch-lost-960"), "{}", told[0]);
    }
    stack
}

/// `/alerts 5`: a spend that leaves fewer than 5 credits is told once (in the user's
/// language); a further spend is not; a top-up re-arms it, and the next fall is told
/// again once the quiet period (a day by default) is over — here, within it, not.
async fn a_low_balance_is_told_once_until_a_top_up_rearms_it(stack: Stack) -> Stack {
    let vera = user(970, "ru");
    stack.say(&vera, 1, "/start").await;
    let set = stack.say(&vera, 2, "/alerts 5").await;
    assert!(
        set.starts_with("Я сообщу, когда кредитов станет меньше 5"),
        "{set}"
    );
    stack.grant_quietly(970, "g-970", 10).await;
    stack.spend(970, "sms-970-1", 6, "sms").await;
    let low = |stack: &Stack| {
        stack
            .fake
            .texts_to(970)
            .into_iter()
            .filter(|t| t.starts_with("Мало кредитов"))
            .collect::<Vec<_>>()
    };
    stack
        .fake
        .wait_until("the low-balance notice", |_| !low(&stack).is_empty())
        .await;
    assert_eq!(
        low(&stack),
        vec![
            "Мало кредитов: осталось 4.00, меньше порога 5.00. Пополните через /topup; порог меняется командой /alerts."
        ]
    );
    stack.spend(970, "sms-970-2", 1, "sms").await;
    stack.grant_quietly(970, "g-970-2", 10).await;
    stack.spend(970, "sms-970-3", 10, "sms").await;
    assert_eq!(
        stack.count("account-970", "balance.low").await,
        1,
        "quiet within the day"
    );
    assert_eq!(stack.count("account-970", "balance.alert_rearmed").await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(low(&stack).len(), 1, "told once");
    stack
}

/// A webhook endpoint the deliverer disabled after failing for its whole schedule:
/// every admin is told once by the notifier's sweep; one an admin disabled is not told.
async fn admins_are_told_once_of_a_webhook_endpoint_given_up(stack: Stack) -> Stack {
    let pool = stack.projector.pool();
    let settings = tally_webhooks::Settings {
        allow_private: true,
        ..tally_webhooks::Settings::default()
    };
    let (dead, _) = tally_webhooks::endpoints::add(
        pool,
        stack.store.as_ref(),
        "http://127.0.0.1:9/dead",
        &["*".to_string()],
        &settings,
    )
    .await
    .unwrap();
    tally_webhooks::endpoints::disable(
        pool,
        &dead.endpoint_id,
        "failed for 72 h (last: the receiver answered 503)",
    )
    .await
    .unwrap();
    let (manual, _) = tally_webhooks::endpoints::add(
        pool,
        stack.store.as_ref(),
        "http://127.0.0.1:9/manual",
        &["*".to_string()],
        &settings,
    )
    .await
    .unwrap();
    tally_webhooks::endpoints::disable(pool, &manual.endpoint_id, "moved to a new receiver")
        .await
        .unwrap();
    let notifier = tally_bot::notifier::Notifier::new(
        Arc::new(tally_bot::Context::new(
            stack.ledgers.clone(),
            stack.projector.clone(),
            // An admin of its own: the running notifier tells A and B.
            HashSet::from([9_003]),
        )),
        tally_bot::client(&bot_settings(&stack.fake)),
    );
    let now = chrono::Utc::now();
    notifier.tell_disabled_webhooks(now).await.unwrap();
    notifier.tell_disabled_webhooks(now).await.unwrap();
    let told: Vec<String> = stack
        .fake
        .texts_to(9_003)
        .into_iter()
        .filter(|t| t.starts_with("Webhook endpoint"))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains(&dead.endpoint_id), "{}", told[0]);
    assert!(told[0].contains("failed for 72 h"), "{}", told[0]);
    stack
}

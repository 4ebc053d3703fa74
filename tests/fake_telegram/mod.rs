//! A fake Telegram Bot API server: real HTTP, the routes `/bot{token}/{Method}` that
//! teloxide calls (with its PascalCase method names), a `getUpdates` feed the test drives (long polling included), and a
//! log of every call the bot made, with its parameters.
//!
//! It answers the methods the bot uses with what Telegram would (a `Message` for
//! `sendMessage`, `editMessageText` and `sendInvoice`, `true` for the answers), and can
//! be told to answer the next calls of a method with a 429 and a `retry_after`, as
//! Telegram does when a bot goes too fast.
//!
//! One file: one fake server, its routes and the update builders a test pushes
//! through it, shared by the bot's tests and the binary's process tests.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The bot's own user id in the fake.
pub const BOT_ID: i64 = 777_000;

/// One call the bot made.
#[derive(Clone, Debug)]
pub struct Call {
    /// The method, as teloxide names it (`sendMessage`).
    pub method: String,
    /// Its parameters.
    pub params: Value,
    /// Whether the fake refused it (a 429, or an error it was told to answer).
    pub refused: bool,
}

/// An error to answer: (times left, code, description).
type Failure = (u32, i64, String);

#[derive(Default)]
struct Inner {
    updates: Mutex<VecDeque<Value>>,
    calls: Mutex<Vec<Call>>,
    next_update_id: Mutex<i64>,
    next_message_id: Mutex<i64>,
    throttled: Mutex<HashMap<String, u32>>,
    /// sendMessage to a chat answered with an error: (times left, code, description).
    failing_chats: Mutex<HashMap<i64, Failure>>,
    /// sendMessage to a chat answered with `migrate_to_chat_id`: the new chat id.
    migrated: Mutex<HashMap<i64, i64>>,
    /// sendMessage to a forum topic (chat, thread) answered with an error: (times
    /// left, code, description).
    failing_topics: Mutex<HashMap<(i64, i64), Failure>>,
    /// Chats whose sendMessage is taken (logged) but not answered until released.
    hanging: Mutex<std::collections::HashSet<i64>>,
    /// Chats `getChat`, `getChatMember` and `sendChatAction` know.
    chats: Mutex<Vec<FakeChat>>,
    /// What `getStarTransactions` lists, oldest first.
    star_transactions: Mutex<Vec<Value>>,
    arrived: Notify,
}

/// A group or channel the fake knows, and the bot's place in it.
#[derive(Clone, Debug)]
pub struct FakeChat {
    pub id: i64,
    /// `channel` or `supergroup`.
    pub kind: &'static str,
    pub username: Option<&'static str>,
    pub title: &'static str,
    /// The bot's status: `administrator`, `member`, `left`.
    pub bot_status: &'static str,
    /// As an administrator: may it post (`can_post_messages`).
    pub can_post: bool,
    /// A forum's topics (empty: not a forum).
    pub topics: Vec<i64>,
}

impl FakeChat {
    fn full_info(&self) -> Value {
        let mut info = json!({
            "id": self.id, "type": self.kind, "title": self.title,
            "accepted_gift_types": {"unlimited_gifts": false, "limited_gifts": false,
                "unique_gifts": false, "premium_subscription": false},
            "max_reaction_count": 11,
        });
        if let Some(username) = self.username {
            info["username"] = json!(username);
        }
        if !self.topics.is_empty() {
            info["is_forum"] = json!(true);
        }
        info
    }

    fn bot_member(&self) -> Value {
        bot_member(self.bot_status, self.can_post)
    }
}

/// The bot as a chat member with `status` (`administrator`: with its rights, posting
/// as `can_post` says).
fn bot_member(status: &str, can_post: bool) -> Value {
    let mut member = json!({"user": bot_user(), "status": status});
    match status {
        "kicked" => member["until_date"] = json!(0),
        "administrator" => {
            for right in [
                "can_be_edited",
                "is_anonymous",
                "can_manage_chat",
                "can_delete_messages",
                "can_manage_video_chats",
                "can_restrict_members",
                "can_promote_members",
                "can_change_info",
                "can_invite_users",
                "can_edit_messages",
                "can_pin_messages",
                "can_post_stories",
                "can_edit_stories",
                "can_delete_stories",
                "can_manage_topics",
            ] {
                member[right] = json!(false);
            }
            member["can_post_messages"] = json!(can_post);
        }
        _ => {}
    }
    member
}

/// The fake server; dropped with the test's runtime.
#[derive(Clone)]
pub struct FakeTelegram {
    inner: Arc<Inner>,
    /// `http://127.0.0.1:PORT/`, for `set_api_url`.
    pub url: url::Url,
}

impl FakeTelegram {
    /// Starts the server on a free port.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        *inner.next_update_id.lock().unwrap() = 1;
        *inner.next_message_id.lock().unwrap() = 1;
        let app = axum::Router::new()
            .route("/{bot}/{method}", post(call))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            inner,
            url: url.parse().unwrap(),
        }
    }

    /// Queues an update for `getUpdates`; gives it the next `update_id` unless it has
    /// one (a redelivery keeps its id). Returns the update as queued.
    pub fn push(&self, mut update: Value) -> Value {
        if update.get("update_id").is_none() {
            let mut next = self.inner.next_update_id.lock().unwrap();
            update["update_id"] = json!(*next);
            *next += 1;
        }
        self.inner.updates.lock().unwrap().push_back(update.clone());
        self.inner.arrived.notify_waiters();
        update
    }

    /// Answers the next `times` calls of `method` with 429 Too Many Requests,
    /// `retry_after` 1 second.
    pub fn throttle_next(&self, method: &str, times: u32) {
        self.inner
            .throttled
            .lock()
            .unwrap()
            .insert(method.to_string(), times);
    }

    /// Answers the next `times` sendMessage calls to `chat` with Telegram's error
    /// `code` and `description` (`u32::MAX`: for ever), e.g. 403 "Forbidden: bot was
    /// blocked by the user" or 502 "Bad Gateway".
    pub fn fail_sends_to(&self, chat: i64, times: u32, code: i64, description: &str) {
        self.inner
            .failing_chats
            .lock()
            .unwrap()
            .insert(chat, (times, code, description.to_string()));
    }

    /// Answers sendMessage to `chat` as Telegram does for a group upgraded to a
    /// supergroup: 400 with `migrate_to_chat_id` = `to`.
    pub fn migrate_chat(&self, chat: i64, to: i64) {
        self.inner.migrated.lock().unwrap().insert(chat, to);
    }

    /// Answers the next `times` sendMessage calls to forum topic `topic` of `chat`
    /// (with that `message_thread_id`) with `code` and `description`, e.g. 400
    /// "Bad Request: message thread not found".
    pub fn fail_topic(&self, chat: i64, topic: i64, times: u32, code: i64, description: &str) {
        self.inner
            .failing_topics
            .lock()
            .unwrap()
            .insert((chat, topic), (times, code, description.to_string()));
    }

    /// Takes sendMessage calls to `chat` (they are in the log, as a message Telegram
    /// received) without answering until [`Self::release`]: the bot's request times
    /// out, or its process dies waiting.
    pub fn hang_sends_to(&self, chat: i64) {
        self.inner.hanging.lock().unwrap().insert(chat);
    }

    /// Answers the calls held by [`Self::hang_sends_to`] (late) and the next at once.
    pub fn release(&self, chat: i64) {
        self.inner.hanging.lock().unwrap().remove(&chat);
    }

    /// Makes a chat known to `getChat`, `getChatMember` and `sendChatAction`.
    pub fn add_chat(&self, chat: FakeChat) {
        self.inner.chats.lock().unwrap().push(chat);
    }

    /// Records an incoming Stars payment for `getStarTransactions`: `charge` from
    /// `user`, `stars` of them.
    pub fn add_star_payment(&self, charge: &str, user: i64, stars: u32) {
        self.inner.star_transactions.lock().unwrap().push(json!({
            "id": charge,
            "amount": stars,
            "date": now(),
            "source": {"type": "user", "transaction_type": "invoice_payment",
                "user": {"id": user, "is_bot": false, "first_name": format!("User{user}")},
                "invoice_payload": "payload"},
        }));
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// The texts sent (or edited in) to a chat, in order.
    pub fn texts_to(&self, chat: i64) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "sendMessage" || c.method == "editMessageText")
            .filter(|c| !c.refused && c.params["chat_id"].as_i64() == Some(chat))
            .filter_map(|c| c.params["text"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits (up to 20 s) until `done` holds for the calls so far, and returns them.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let calls = self.calls();
            if done(&calls) {
                return calls;
            }
            if tokio::time::Instant::now() > deadline {
                let log: Vec<String> = calls
                    .iter()
                    .map(|c| format!("{} {}", c.method, c.params))
                    .collect();
                panic!(
                    "timed out waiting for {what}; the bot called:\n{}",
                    log.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `chat` has received `count` texts, and returns them.
    pub async fn wait_texts(&self, chat: i64, count: usize) -> Vec<String> {
        self.wait_until(&format!("{count} texts to chat {chat}"), |_| {
            self.texts_to(chat).len() >= count
        })
        .await;
        self.texts_to(chat)
    }
}

fn ok(result: Value) -> Json<Value> {
    Json(json!({"ok": true, "result": result}))
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Tally", "username": "tally_test_bot"})
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The fields of a `multipart/form-data` body (teloxide sends `setWebhook` and
/// `sendPhoto` so), as JSON: numbers and JSON values read, the rest strings.
fn form_fields(content_type: &str, body: &[u8]) -> Value {
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return json!({});
    };
    let body = String::from_utf8_lossy(body);
    let mut fields = serde_json::Map::new();
    for part in body.split(&format!("--{}", boundary.trim_matches('"'))) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|n| n.split('"').next())
        else {
            continue;
        };
        // A multipart field is text; numbers and JSON (ids, keyboards) are read as
        // Telegram reads them.
        let value = value.trim_end_matches("\r\n");
        let parsed = match serde_json::from_str::<Value>(value) {
            Ok(v @ (Value::Number(_) | Value::Object(_) | Value::Array(_))) => v,
            _ => json!(value),
        };
        fields.insert(name.to_string(), parsed);
    }
    Value::Object(fields)
}

async fn call(
    State(inner): State<Arc<Inner>>,
    Path((bot, method)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Json<Value> {
    assert!(
        bot.starts_with("bot"),
        "the path names the bot token: {bot}"
    );
    // teloxide names methods in PascalCase (`SendMessage`), the Bot API's docs in
    // camelCase; Telegram accepts both. The log keeps the docs' names.
    let method = match method.chars().next() {
        Some(first) => format!(
            "{}{}",
            first.to_ascii_lowercase(),
            &method[first.len_utf8()..]
        ),
        None => method,
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let params: Value = match content_type.starts_with("multipart/form-data") {
        true => form_fields(content_type, &body),
        false => serde_json::from_slice(&body).unwrap_or(json!({})),
    };
    let refused = {
        let mut throttled = inner.throttled.lock().unwrap();
        match throttled.get_mut(&method) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    };
    let failure = match method.as_str() {
        "sendMessage" | "sendPhoto" => {
            let chat = params["chat_id"].as_i64().unwrap_or_default();
            let take = |entry: Option<&mut (u32, i64, String)>| match entry {
                Some((left, code, description)) if *left > 0 => {
                    *left = left.saturating_sub(u32::from(*left != u32::MAX));
                    Some((*code, description.clone()))
                }
                _ => None,
            };
            let topic = params["message_thread_id"].as_i64().map(|thread| {
                take(
                    inner
                        .failing_topics
                        .lock()
                        .unwrap()
                        .get_mut(&(chat, thread)),
                )
            });
            match topic.flatten() {
                Some(failure) => Some(failure),
                None => take(inner.failing_chats.lock().unwrap().get_mut(&chat)),
            }
        }
        _ => None,
    };
    if method != "getUpdates" {
        inner.calls.lock().unwrap().push(Call {
            method: method.clone(),
            params: params.clone(),
            refused: refused || failure.is_some(),
        });
    }
    if method == "sendMessage" || method == "sendPhoto" {
        let chat = params["chat_id"].as_i64().unwrap_or_default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while inner.hanging.lock().unwrap().contains(&chat)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(to) = inner.migrated.lock().unwrap().get(&chat).copied() {
            if let Some(last) = inner.calls.lock().unwrap().last_mut() {
                last.refused = true;
            }
            return Json(json!({
                "ok": false,
                "error_code": 400,
                "description": "Bad Request: group chat was upgraded to a supergroup chat",
                "parameters": {"migrate_to_chat_id": to}
            }));
        }
    }
    if let Some((code, description)) = failure {
        return Json(json!({"ok": false, "error_code": code, "description": description}));
    }
    {
        if refused {
            return Json(json!({
                "ok": false,
                "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1}
            }));
        }
    }
    match method.as_str() {
        "getMe" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Tally", "username": "tally_test_bot",
            "can_join_groups": false, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false,
            "has_main_web_app": false
        })),
        "getWebhookInfo" => {
            ok(json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0}))
        }
        "getUpdates" => {
            let wait = params["timeout"].as_u64().unwrap_or(0).min(2);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            loop {
                let arrived = inner.arrived.notified();
                let batch: Vec<Value> = inner.updates.lock().unwrap().drain(..).collect();
                if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                    return ok(Value::Array(batch));
                }
                let _ = tokio::time::timeout_at(deadline, arrived).await;
            }
        }
        "sendMessage" | "sendInvoice" | "editMessageText" => {
            let message_id = match params["message_id"].as_i64() {
                Some(id) => id,
                None => {
                    let mut next = inner.next_message_id.lock().unwrap();
                    *next += 1;
                    *next
                }
            };
            let chat = params["chat_id"].as_i64().unwrap_or(0);
            let text = params["text"]
                .as_str()
                .or(params["title"].as_str())
                .unwrap_or("");
            ok(json!({
                "message_id": message_id,
                "date": now(),
                "chat": {"id": chat, "type": "private", "first_name": "user"},
                "from": bot_user(),
                "text": text,
            }))
        }
        "createInvoiceLink" => ok(json!(format!(
            "https://t.me/$invoice-{}",
            params["payload"].as_str().unwrap_or_default()
        ))),
        "getStarTransactions" => {
            let all = inner.star_transactions.lock().unwrap();
            let offset = params["offset"].as_u64().unwrap_or(0) as usize;
            let limit = params["limit"].as_u64().unwrap_or(100) as usize;
            let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
            ok(json!({"transactions": page}))
        }
        "getChat" | "getChatMember" | "sendChatAction" => {
            let chats = inner.chats.lock().unwrap();
            let found = chats.iter().find(|c| match &params["chat_id"] {
                Value::String(name) => {
                    c.username.map(|u| format!("@{u}")).as_deref() == Some(name.as_str())
                        || name.parse::<i64>().ok() == Some(c.id)
                }
                id => id.as_i64() == Some(c.id),
            });
            let Some(chat) = found else {
                return Json(json!({"ok": false, "error_code": 400,
                    "description": "Bad Request: chat not found"}));
            };
            match method.as_str() {
                "getChat" => ok(chat.full_info()),
                "getChatMember" => ok(chat.bot_member()),
                _ => match params["message_thread_id"].as_i64() {
                    Some(thread) if !chat.topics.contains(&thread) => Json(json!({"ok": false,
                        "error_code": 400, "description": "Bad Request: message thread not found"})),
                    _ => ok(json!(true)),
                },
            }
        }
        "sendPhoto" => {
            let message_id = {
                let mut next = inner.next_message_id.lock().unwrap();
                *next += 1;
                *next
            };
            ok(json!({
                "message_id": message_id,
                "date": now(),
                "chat": {"id": params["chat_id"], "type": "private", "first_name": "user"},
                "from": bot_user(),
                "photo": [{"file_id": "photo-1", "file_unique_id": "u-1", "width": 640,
                    "height": 480, "file_size": 1000}],
                "caption": params["caption"],
            }))
        }
        _ => ok(json!(true)),
    }
}

/// A Telegram user, as updates carry it.
pub fn user(id: i64, language: &str) -> Value {
    json!({"id": id, "is_bot": false, "first_name": format!("User{id}"), "username": format!("user{id}"), "language_code": language})
}

/// A private text message from `from`.
pub fn message(from: &Value, message_id: i64, text: &str) -> Value {
    let id = from["id"].as_i64().unwrap();
    let mut message = json!({
        "message_id": message_id,
        "date": now(),
        "chat": {"id": id, "type": "private", "first_name": from["first_name"]},
        "from": from,
        "text": text,
    });
    if text.starts_with('/') {
        let length = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .encode_utf16()
            .count();
        message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": length}]);
    }
    json!({"message": message})
}

/// A press of an inline button with `data` under the bot's message `message_id`.
pub fn button(from: &Value, query_id: &str, message_id: i64, data: &str) -> Value {
    let id = from["id"].as_i64().unwrap();
    json!({"callback_query": {
        "id": query_id,
        "from": from,
        "chat_instance": format!("ci-{id}"),
        "data": data,
        "message": {
            "message_id": message_id,
            "date": now(),
            "chat": {"id": id, "type": "private", "first_name": from["first_name"]},
            "from": bot_user(),
            "text": "menu",
        }
    }})
}

/// Telegram's pre-checkout question for an invoice payload.
pub fn pre_checkout(from: &Value, query_id: &str, payload: &str, stars: u32) -> Value {
    json!({"pre_checkout_query": {
        "id": query_id,
        "from": from,
        "currency": "XTR",
        "total_amount": stars,
        "invoice_payload": payload,
    }})
}

/// The service message of a successful Stars payment.
pub fn successful_payment(
    from: &Value,
    message_id: i64,
    payload: &str,
    stars: u32,
    charge: &str,
) -> Value {
    let id = from["id"].as_i64().unwrap();
    json!({"message": {
        "message_id": message_id,
        "date": now(),
        "chat": {"id": id, "type": "private", "first_name": from["first_name"]},
        "from": from,
        "successful_payment": {
            "currency": "XTR",
            "total_amount": stars,
            "invoice_payload": payload,
            "telegram_payment_charge_id": charge,
            "provider_payment_charge_id": "",
        }
    }})
}

/// Telegram's `my_chat_member` update: the bot's membership in `chat` (of `kind`:
/// `channel`, `supergroup`, `group`) went from `old` to `new` (`member`, `left`,
/// `kicked`, `administrator`), by `by`.
pub fn my_chat_member(by: &Value, chat: i64, kind: &str, old: &str, new: &str) -> Value {
    let member = |status: &str| bot_member(status, true);
    json!({"my_chat_member": {
        "chat": {"id": chat, "type": kind, "title": format!("Chat {chat}")},
        "from": by,
        "date": now(),
        "old_chat_member": member(old),
        "new_chat_member": member(new),
    }})
}

/// A private photo message from `from` with a caption (the photo's `file_id` as
/// given).
pub fn photo_message(from: &Value, message_id: i64, caption: &str, file_id: &str) -> Value {
    let id = from["id"].as_i64().unwrap();
    json!({"message": {
        "message_id": message_id,
        "date": now(),
        "chat": {"id": id, "type": "private", "first_name": from["first_name"]},
        "from": from,
        "caption": caption,
        "photo": [
            {"file_id": format!("{file_id}-small"), "file_unique_id": "s", "width": 90, "height": 90},
            {"file_id": file_id, "file_unique_id": "l", "width": 1280, "height": 960}
        ],
    }})
}

/// A message `from` forwarded to the bot from channel `chat`.
pub fn forwarded_from_channel(from: &Value, message_id: i64, chat: i64, title: &str) -> Value {
    let id = from["id"].as_i64().unwrap();
    json!({"message": {
        "message_id": message_id,
        "date": now(),
        "chat": {"id": id, "type": "private", "first_name": from["first_name"]},
        "from": from,
        "text": "a post in the channel",
        "forward_origin": {"type": "channel", "date": now(), "message_id": 7,
            "chat": {"id": chat, "type": "channel", "title": title}},
    }})
}

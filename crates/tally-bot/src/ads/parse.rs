//! How users spell an ad and a destination in the chat: an ad's trailing
//! `Label - https://…` lines are its buttons; a destination is an `@username`, a
//! `t.me/…` link (a forum topic's too) or a chat id.

use tally_domain::slot::LinkButton;
use teloxide::types::ChatId;

/// The ad's text and its link buttons: trailing `Label - https://…` lines are buttons.
pub fn parse_content(text: &str) -> (String, Vec<LinkButton>) {
    let mut lines: Vec<&str> = text.lines().collect();
    let mut buttons = Vec::new();
    while let Some(last) = lines.last() {
        let Some((label, url)) = last.rsplit_once(" - ") else {
            break;
        };
        let url = url.trim();
        let is_link = ["https://", "http://", "tg://"]
            .iter()
            .any(|s| url.starts_with(s));
        if !is_link || label.trim().is_empty() {
            break;
        }
        buttons.push(LinkButton {
            label: label.trim().to_string(),
            url: url.to_string(),
            callback: None,
        });
        lines.pop();
    }
    buttons.reverse();
    (lines.join("\n").trim().to_string(), buttons)
}

/// A destination as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A chat id (forwarded, a `t.me/c/…` link, or typed), and a topic.
    Id(ChatId, Option<i64>),
    /// A public `@username`, and a topic.
    Username(String, Option<i64>),
}

/// Reads `@name`, `t.me/name`, `t.me/name/TOPIC`, `t.me/c/ID/TOPIC` (with or without
/// `https://`) or a chat id.
pub fn parse_target(text: &str) -> Option<Target> {
    let text = text.trim();
    if let Ok(id) = text.parse::<i64>() {
        return Some(Target::Id(ChatId(id), None));
    }
    if let Some(name) = text.strip_prefix('@') {
        return valid_username(name).then(|| Target::Username(format!("@{name}"), None));
    }
    let path = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .unwrap_or(text);
    let path = path
        .strip_prefix("t.me/")
        .or_else(|| path.strip_prefix("telegram.me/"))?;
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let number = |s: Option<&&str>| s.and_then(|s| s.parse::<i64>().ok());
    match parts.as_slice() {
        ["c", id, rest @ ..] => {
            let internal: i64 = id.parse().ok()?;
            let chat = format!("-100{internal}").parse().ok()?;
            Some(Target::Id(ChatId(chat), number(rest.first())))
        }
        [name, rest @ ..] if valid_username(name) => {
            Some(Target::Username(format!("@{name}"), number(rest.first())))
        }
        _ => None,
    }
}

fn valid_username(name: &str) -> bool {
    (4..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.as_bytes()[0].is_ascii_alphabetic()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_link_lines_are_buttons() {
        let (text, buttons) = parse_content(
            "Fresh bread\nEvery morning\nOrder - https://bread.example/order\nMap - https://maps.example/x",
        );
        assert_eq!(text, "Fresh bread\nEvery morning");
        assert_eq!(
            buttons,
            vec![
                LinkButton {
                    label: "Order".into(),
                    url: "https://bread.example/order".into(),
                    callback: None,
                },
                LinkButton {
                    label: "Map".into(),
                    url: "https://maps.example/x".into(),
                    callback: None,
                },
            ]
        );
        let (text, buttons) = parse_content("Prices - from 5 USD");
        assert_eq!((text.as_str(), buttons.len()), ("Prices - from 5 USD", 0));
    }

    #[test]
    fn destinations_are_read_as_telegram_spells_them() {
        assert_eq!(
            parse_target("@bread_news"),
            Some(Target::Username("@bread_news".into(), None))
        );
        assert_eq!(
            parse_target("https://t.me/bread_news/42"),
            Some(Target::Username("@bread_news".into(), Some(42)))
        );
        assert_eq!(
            parse_target("t.me/c/1234567890/17"),
            Some(Target::Id(ChatId(-1_001_234_567_890), Some(17)))
        );
        assert_eq!(
            parse_target("-1001234"),
            Some(Target::Id(ChatId(-1_001_234), None))
        );
        assert_eq!(parse_target("bread news"), None);
        assert_eq!(parse_target("@x"), None);
        assert_eq!(parse_target("https://example.com/bread"), None);
    }
}

//! Where a webhook may go: an `http(s)` URL whose host resolves to public addresses
//! only, unless the operator allows private ones. Checked when an endpoint is added
//! and again before every delivery (a name may be re-pointed later). Loopback,
//! private (RFC 1918, unique-local), link-local, carrier-grade NAT, unspecified,
//! multicast and documentation ranges are refused, so a webhook URL cannot be used
//! to reach the operator's internal network or a cloud metadata service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::WebhookError;

/// Whether an address is one a webhook must not reach.
pub fn is_internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(a: Ipv4Addr) -> bool {
    let [first, second, ..] = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || first == 0
        || (first == 100 && (64..128).contains(&second)) // carrier-grade NAT
        || (first == 198 && (second == 18 || second == 19)) // benchmarking
        || first >= 240
}

fn internal_v6(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || first == 0x2001 && a.segments()[1] == 0x0db8 // documentation
}

/// Checks a URL: `http(s)`, with a host, resolving to allowed addresses only.
pub async fn check(url: &str, allow_private: bool) -> Result<url::Url, WebhookError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| WebhookError::UrlRefused(format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(WebhookError::UrlRefused(format!(
            "{url:?} is not an http(s) URL"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(WebhookError::Invalid(
            "a webhook URL carries no credentials; receivers verify the signature".into(),
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| WebhookError::UrlRefused(format!("{url:?} names no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| WebhookError::UrlRefused(format!("{host} does not resolve: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    if addresses.is_empty() {
        return Err(WebhookError::UrlRefused(format!(
            "{host} resolves to nothing"
        )));
    }
    if !allow_private && let Some(internal) = addresses.iter().find(|a| is_internal(**a)) {
        return Err(WebhookError::UrlRefused(format!(
            "{host} resolves to {internal}, a loopback or private address; webhooks go to \
             public addresses only (TALLY_WEBHOOKS_ALLOW_PRIVATE=true allows them)"
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_refused_and_public_ones_are_not() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(
                is_internal(internal.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
                "{internal}"
            );
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(
                !is_internal(public.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
                "{public}"
            );
        }
    }
}

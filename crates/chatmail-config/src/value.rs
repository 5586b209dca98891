//! Typed readers for single chatmail.ini values. Each returns the reason a
//! value is unusable; the caller adds key and file.

use std::net::IpAddr;

pub fn unsigned(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| "expected a whole number".into())
}

pub fn float(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err("expected a non-negative number".into()),
    }
}

pub fn size(text: &str) -> Result<u64, String> {
    crate::size::parse_size(text).ok_or_else(|| "expected a size such as 500M or 1G".into())
}

/// A size where a bare number means MiB, as the relay we replace reads
/// `max_mailbox_size`, `min_available_memory` and `min_free_disk_space`
/// (`500` is 500 MiB there, not 500 bytes); `500B` is bytes.
pub fn size_bare_mib(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<u64>()
            .ok()
            .and_then(|mib| mib.checked_mul(1 << 20))
            .ok_or_else(|| "expected a size such as 500M or 1G".into());
    }
    size(text)
}

pub fn port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err("expected a TCP port between 1 and 65535".into()),
        Ok(port) => Ok(port),
    }
}

pub fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// A host we listen on or connect to: an IP address or a DNS name.
pub fn host(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.parse::<IpAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    let name_ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if name_ok {
        Ok(text.to_owned())
    } else {
        Err("expected an IP address or host name".into())
    }
}

pub fn path(text: &str) -> Result<std::path::PathBuf, String> {
    let text = text.trim();
    if text.is_empty() {
        Err("expected a path".into())
    } else {
        Ok(text.into())
    }
}

/// A server address as `ip` or `ip:port` (`[v6]:port`), with
/// `default_port` when none is given.
pub fn socket_addr(default_port: u16) -> impl FnOnce(&str) -> Result<std::net::SocketAddr, String> {
    move |text| {
        let text = text.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(std::net::SocketAddr::new(ip, default_port));
        }
        text.parse()
            .map_err(|_| "expected an IP address, optionally with :port".into())
    }
}

/// IP addresses separated by commas or spaces; empty for none.
pub fn ip_list(text: &str) -> Result<Vec<IpAddr>, String> {
    text.split([',', ' ', '\t'])
        .filter(|word| !word.is_empty())
        .map(|word| {
            word.parse()
                .map_err(|_| format!("{word:?} is not an IP address"))
        })
        .collect()
}

/// A duration such as `8s`, `500ms` or `5h`; a bare number is seconds.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("must be longer than zero".into()),
        Err(_) => Err("expected a duration such as 8s, 500ms or 5h".into()),
    }
}

/// A duration (as [`duration`]) within `range`.
pub fn duration_within(
    text: &str,
    range: std::ops::RangeInclusive<std::time::Duration>,
) -> Result<std::time::Duration, String> {
    let parsed = duration(text)?;
    if range.contains(&parsed) {
        Ok(parsed)
    } else {
        Err(format!(
            "must be between {} and {}",
            humantime::format_duration(*range.start()),
            humantime::format_duration(*range.end())
        ))
    }
}

/// An http or https URL.
pub fn url(text: &str) -> Result<String, String> {
    let text = text.trim();
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or("expected an http:// or https:// URL")?;
    if rest.is_empty() || rest.starts_with('/') || text.chars().any(char::is_whitespace) {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(text.to_owned())
}

/// One DNS label (letters, digits, hyphens inside, at most 63), such as a
/// DKIM selector.
pub fn dns_label(text: &str) -> Result<String, String> {
    let text = text.trim();
    let well_formed = (1..=63).contains(&text.len())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if !well_formed {
        return Err("expected one DNS label of letters, digits and inner hyphens".into());
    }
    Ok(text.to_owned())
}

/// A line of text for a web page (HTML-escaped where it is shown): no
/// control characters.
pub fn page_text(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.chars().any(char::is_control) {
        return Err("expected one line of text".into());
    }
    Ok(text.to_owned())
}

/// A contact address such as `privacy@example.org` (it goes into server
/// configuration files, so nothing that could end a line or a value).
pub fn contact_address(text: &str) -> Result<String, String> {
    let text = text.trim();
    let well_formed = text
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '<' | '>' | '{' | '}'));
    if !well_formed {
        return Err("expected an address such as privacy@example.org".into());
    }
    Ok(text.to_owned())
}

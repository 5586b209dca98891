use std::sync::LazyLock;

use mail_parser::{HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType};

use crate::armor;

/// Which filter asks: rules differ slightly between mail our users send
/// and mail arriving for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Incoming,
    Outgoing,
}

/// The SMTP envelope, for the rules that depend on it.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub mail_from: &'a str,
    pub rcpt_to: &'a [String],
}

/// What a message is, as far as the relay cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Encrypted,
    SecureJoin,
    AutocryptSetupMessage,
    MailerDaemonReport,
    /// Not something the relay carries; the reason is for logs.
    Cleartext(&'static str),
}

impl Verdict {
    /// Whether the message passes the policy.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Self::Cleartext(_))
    }
}

/// Classifies a raw RFC 5322 message.
#[must_use]
pub fn classify(raw: &[u8], envelope: &Envelope<'_>, direction: Direction) -> Verdict {
    ParsedMessage::parse(raw).classify(envelope, direction)
}

/// Parses only the headers the checks read (the MIME structure, From,
/// Subject); the others are kept raw. Parsing every known header (To and
/// Cc addresses, dates, message IDs) cost a tenth of the check and a
/// dozen allocations per message for values nobody looked at.
static POLICY_PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .with_mime_headers()
        .header_address(HeaderName::From)
        .header_text(HeaderName::Subject)
});

/// A message parsed once for every check a filter makes on it (the From
/// address and the policy).
pub struct ParsedMessage<'x> {
    message: Option<Message<'x>>,
}

impl<'x> ParsedMessage<'x> {
    #[must_use]
    pub fn parse(raw: &'x [u8]) -> Self {
        Self {
            message: POLICY_PARSER.parse(raw),
        }
    }

    /// As [`crate::from_header_address`].
    #[must_use]
    pub fn from_address(&self) -> Option<String> {
        crate::sender::from_address(self.message.as_ref()?)
    }

    /// As [`classify`].
    #[must_use]
    pub fn classify(&self, envelope: &Envelope<'_>, direction: Direction) -> Verdict {
        match &self.message {
            Some(message) => classify_parsed(message, envelope, direction),
            None => Verdict::Cleartext("not a parseable message"),
        }
    }
}

fn classify_parsed(
    message: &Message<'_>,
    envelope: &Envelope<'_>,
    direction: Direction,
) -> Verdict {
    let encrypted = match check_pgp_mime(message, direction) {
        Ok(()) => return Verdict::Encrypted,
        Err(reason) => reason,
    };
    if is_securejoin(message) {
        return Verdict::SecureJoin;
    }
    match direction {
        Direction::Outgoing if is_autocrypt_setup_message(message, envelope) => {
            Verdict::AutocryptSetupMessage
        }
        Direction::Incoming if is_mailer_daemon_report(message) => Verdict::MailerDaemonReport,
        _ => Verdict::Cleartext(encrypted),
    }
}

fn has_type(part: &MessagePart<'_>, ctype: &str, subtype: &str) -> bool {
    part.content_type().is_some_and(|content_type| {
        content_type.ctype().eq_ignore_ascii_case(ctype)
            && content_type
                .subtype()
                .is_some_and(|sub| sub.eq_ignore_ascii_case(subtype))
    })
}

fn root_has_type(message: &Message<'_>, ctype: &str, subtype: &str) -> bool {
    message
        .part(0)
        .is_some_and(|root| has_type(root, ctype, subtype))
}

fn is_leaf(part: &MessagePart<'_>) -> bool {
    !matches!(part.body, PartType::Multipart(_) | PartType::Message(_))
}

/// The direct children of the root part, if it is a multipart.
fn root_children<'m, 'x>(message: &'m Message<'x>) -> Option<Vec<&'m MessagePart<'x>>> {
    let PartType::Multipart(ids) = &message.part(0)?.body else {
        return None;
    };
    ids.iter().map(|&id| message.part(id)).collect()
}

/// PGP/MIME (RFC 3156): `multipart/encrypted` with exactly two leaves, the
/// version part and the armored payload.
fn check_pgp_mime(message: &Message<'_>, direction: Direction) -> Result<(), &'static str> {
    if !root_has_type(message, "multipart", "encrypted") {
        return Err("not multipart/encrypted");
    }
    let children = root_children(message).ok_or("malformed multipart")?;
    let [version, payload] = children.as_slice() else {
        return Err("multipart/encrypted without exactly two parts");
    };
    if !is_leaf(version) || !is_leaf(payload) {
        return Err("nested parts inside multipart/encrypted");
    }
    if !has_type(version, "application", "pgp-encrypted") {
        return Err("first part is not application/pgp-encrypted");
    }
    if version.contents().trim_ascii() != b"Version: 1" {
        return Err("PGP/MIME version part is not \"Version: 1\"");
    }
    if !has_type(payload, "application", "octet-stream") {
        return Err("second part is not application/octet-stream");
    }
    armor::check_payload(payload.contents(), direction == Direction::Incoming)
}

const SECUREJOIN_STEPS: [&str; 2] = ["vc-request", "vg-request"];

/// A SecureJoin request: it must be readable before keys are exchanged.
fn is_securejoin(message: &Message<'_>) -> bool {
    let header_ok = message
        .header_raw("Secure-Join")
        .map(str::trim)
        .is_some_and(|step| {
            SECUREJOIN_STEPS
                .iter()
                .any(|s| step.eq_ignore_ascii_case(s))
        });
    if !header_ok {
        return false;
    }
    let Some(children) = root_children(message) else {
        return false;
    };
    let [text] = children.as_slice() else {
        return false;
    };
    if !is_leaf(text) || !has_type(text, "text", "plain") {
        return false;
    }
    let Ok(body) = std::str::from_utf8(text.contents()) else {
        return false;
    };
    let body = body.trim();
    SECUREJOIN_STEPS
        .iter()
        .any(|step| body.eq_ignore_ascii_case(&format!("secure-join: {step}")))
}

/// An Autocrypt Setup Message (its key material is encrypted with a setup
/// code) sent by a user to themselves.
fn is_autocrypt_setup_message(message: &Message<'_>, envelope: &Envelope<'_>) -> bool {
    let [recipient] = envelope.rcpt_to else {
        return false;
    };
    recipient.eq_ignore_ascii_case(envelope.mail_from)
        && message.subject().map(str::trim) == Some("Autocrypt Setup Message")
        && root_has_type(message, "multipart", "mixed")
}

/// A delivery status report from a mail server.
fn is_mailer_daemon_report(message: &Message<'_>) -> bool {
    let auto_submitted = message
        .header_raw("Auto-Submitted")
        .is_some_and(|value| !value.trim().is_empty());
    let from_mailer_daemon = message
        .from()
        .and_then(|from| from.first())
        .and_then(|addr| addr.address())
        .and_then(|addr| addr.split('@').next())
        .is_some_and(|local| local.eq_ignore_ascii_case("mailer-daemon"));
    auto_submitted && from_mailer_daemon && root_has_type(message, "multipart", "report")
}

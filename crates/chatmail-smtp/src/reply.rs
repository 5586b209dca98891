//! SMTP replies as values: code, enhanced status code and text.

use std::borrow::Cow;
use std::fmt;

use chatmail_config::AddressRefusal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// RFC 3463 enhanced status code, such as `2.0.0`.
    pub enhanced: Cow<'static, str>,
    pub text: Cow<'static, str>,
}

impl Reply {
    #[must_use]
    pub const fn new(code: u16, enhanced: &'static str, text: &'static str) -> Self {
        Self {
            code,
            enhanced: Cow::Borrowed(enhanced),
            text: Cow::Borrowed(text),
        }
    }

    #[must_use]
    pub fn owned(code: u16, enhanced: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: Cow::Owned(enhanced.into()),
            text: Cow::Owned(text.into()),
        }
    }

    /// 2xx
    #[must_use]
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: the sender should try again later.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Appends the reply in wire form; text lines become continuation lines.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // Copied straight into `out`: a reply is written for every command,
        // and formatting (or a string per line) showed in profiles.
        let code = self.code_digits();
        let mut lines = self.text.lines().peekable();
        if lines.peek().is_none() {
            out.extend_from_slice(&code);
            out.push(b' ');
            out.extend_from_slice(self.enhanced.as_bytes());
            out.extend_from_slice(b"\r\n");
            return;
        }
        while let Some(line) = lines.next() {
            out.extend_from_slice(&code);
            out.push(if lines.peek().is_some() { b'-' } else { b' ' });
            if !self.enhanced.is_empty() {
                out.extend_from_slice(self.enhanced.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The three digits of the code (a code is 200 to 599; others are
    /// shown modulo 1000, as no reply has them).
    fn code_digits(&self) -> [u8; 3] {
        let digit = |value: u16| b'0' + u8::try_from(value % 10).unwrap_or(0);
        [
            digit(self.code / 100),
            digit(self.code / 10),
            digit(self.code),
        ]
    }

    // RFC 5321 4.2 and RFC 3463 codes used by the engine.
    pub const OK: Self = Self::new(250, "2.0.0", "OK");
    pub const SENDER_OK: Self = Self::new(250, "2.1.0", "Sender OK");
    pub const RECIPIENT_OK: Self = Self::new(250, "2.1.5", "Recipient OK");
    pub const RESET: Self = Self::new(250, "2.0.0", "Reset");
    pub const START_DATA: Self = Self::new(354, "", "End data with <CR><LF>.<CR><LF>");
    pub const BYE: Self = Self::new(221, "2.0.0", "Bye");
    pub const SHUTTING_DOWN: Self = Self::new(421, "4.3.2", "Service shutting down");
    pub const TIMEOUT: Self = Self::new(421, "4.4.2", "Timeout, closing connection");
    pub const SESSION_TOO_LONG: Self =
        Self::new(421, "4.4.2", "Session too long, closing connection");
    pub const TOO_MANY_ERRORS: Self =
        Self::new(421, "4.7.0", "Too many errors, closing connection");
    pub const TEMPORARY_FAILURE: Self =
        Self::new(451, "4.3.0", "Temporary failure, try again later");
    pub const CHECK_TIMEOUT: Self = Self::new(
        451,
        "4.4.7",
        "Checking the message took too long, try again later",
    );
    pub const TOO_SLOW: Self = Self::new(
        451,
        "4.4.2",
        "Message data arrives too slowly, closing connection",
    );
    pub const TOO_MANY_RECIPIENTS: Self = Self::new(452, "4.5.3", "Too many recipients");
    /// The daemon's budget for message bytes is spent for now.
    pub const NO_MEMORY: Self =
        Self::new(452, "4.3.1", "Insufficient system storage, try again later");
    pub const LINE_TOO_LONG: Self = Self::new(500, "5.5.2", "Line too long");
    pub const UNKNOWN_COMMAND: Self = Self::new(500, "5.5.1", "Unknown command");
    pub const SYNTAX_ERROR: Self = Self::new(501, "5.5.4", "Syntax error");
    pub const BAD_SENDER: Self = Self::new(501, "5.1.7", "Bad sender address syntax");
    pub const BAD_RECIPIENT: Self = Self::new(501, "5.1.3", "Bad recipient address syntax");
    pub const NOT_IMPLEMENTED: Self = Self::new(502, "5.5.1", "Command not implemented");
    pub const BAD_SEQUENCE: Self = Self::new(503, "5.5.1", "Bad sequence of commands");
    pub const NEED_HELO: Self = Self::new(503, "5.5.1", "Send EHLO first");
    pub const NEED_MAIL: Self = Self::new(503, "5.5.1", "Need MAIL command");
    pub const NESTED_MAIL: Self = Self::new(503, "5.5.1", "Nested MAIL command");
    pub const NEED_RCPT: Self = Self::new(503, "5.5.1", "Need RCPT command");
    pub const BARE_NEWLINE: Self = Self::new(
        550,
        "5.5.2",
        "Message contains a bare <CR> or <LF>; lines must end with <CR><LF>",
    );
    /// The text of the program we replace (without an enhanced code, so
    /// searches for it keep finding it).
    pub const MESSAGE_TOO_BIG: Self = Self::new(552, "", "Message exceeds maximum size");
    /// VRFY says nothing about whether an account exists (RFC 5321 3.5.3).
    pub const CANNOT_VERIFY: Self = Self::new(
        252,
        "2.0.0",
        "Cannot verify addresses; send the message and delivery will be attempted",
    );
    pub const UNSUPPORTED_PARAMETER: Self = Self::new(555, "5.5.4", "Unsupported parameter");
    /// Mail from outside is only for this relay's accounts.
    pub const RELAY_DENIED: Self = Self::new(
        550,
        "5.7.1",
        "Relay access denied: this relay takes mail only for its own accounts",
    );

    /// The refusal of an envelope address: 501 for malformed addresses,
    /// 553 for forms the relay does not accept, 550 for recipients no
    /// account can be (RFC 5321 4.2.2; RFC 3463 X.1.7 for senders, X.1.3
    /// and X.1.1 for recipients).
    #[must_use]
    pub fn address_refused(role: AddressRole, refusal: AddressRefusal) -> Self {
        let (name, enhanced) = match role {
            AddressRole::Sender => ("Sender", "5.1.7"),
            AddressRole::Recipient => ("Recipient", "5.1.3"),
        };
        let text = format!("{name} address refused: {refusal}");
        if role == AddressRole::Recipient && refusal == AddressRefusal::NotAnAccountName {
            Self::owned(550, "5.1.1", text)
        } else if refusal.is_syntax_error() {
            Self::owned(501, enhanced, text)
        } else {
            Self::owned(553, enhanced, text)
        }
    }
}

/// Which envelope address a reply is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRole {
    Sender,
    Recipient,
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.enhanced.is_empty() {
            write!(f, "{} {}", self.code, self.text)
        } else {
            write!(f, "{} {} {}", self.code, self.enhanced, self.text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reply;

    fn wire(reply: &Reply) -> String {
        let mut out = Vec::new();
        reply.write_to(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn wire_forms() {
        assert_eq!(wire(&Reply::OK), "250 2.0.0 OK\r\n");
        assert_eq!(
            wire(&Reply::START_DATA),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        assert_eq!(
            wire(&Reply::owned(250, "", "relay.test\nPIPELINING\nSIZE 100")),
            "250-relay.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
        );
        assert_eq!(
            wire(&Reply::owned(451, "4.3.0", "one\ntwo")),
            "451-4.3.0 one\r\n451 4.3.0 two\r\n"
        );
        assert_eq!(wire(&Reply::new(221, "2.0.0", "")), "221 2.0.0\r\n");
        assert_eq!(wire(&Reply::new(504, "", "")), "504 \r\n");
    }
}

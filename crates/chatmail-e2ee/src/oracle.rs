//! The policy's reading held to a client's: whatever the policy lets
//! through must look the same to `mailparse`, the MIME parser of Delta
//! Chat. A cleartext message that the policy takes for PGP/MIME, or a
//! SecureJoin request or bounce that a client shows as something else, is
//! a disagreement. The differential test and its fuzz target call
//! [`disagreement`].

use mailparse::ParsedMail;

use crate::{Direction, Envelope, ParsedMessage, Verdict};

/// How the policy's verdict on `raw` and mailparse's reading of it
/// differ, if they do.
#[must_use]
pub fn disagreement(raw: &[u8], envelope: &Envelope<'_>) -> Option<String> {
    let ours = ParsedMessage::parse(raw);
    let theirs = mailparse::parse_mail(raw);
    for direction in [Direction::Incoming, Direction::Outgoing] {
        let verdict = ours.classify(envelope, direction);
        if !verdict.is_allowed() {
            continue;
        }
        let Ok(theirs) = &theirs else {
            return Some(format!("{verdict:?} ({direction:?}), but mailparse fails"));
        };
        let differs = match verdict {
            Verdict::Encrypted => encrypted_differs(&ours, theirs),
            Verdict::SecureJoin => securejoin_differs(theirs),
            Verdict::AutocryptSetupMessage => {
                (theirs.ctype.mimetype != "multipart/mixed").then(|| theirs.ctype.mimetype.clone())
            }
            Verdict::MailerDaemonReport => report_differs(theirs),
            Verdict::Cleartext(_) => None,
        };
        if let Some(what) = differs {
            return Some(format!(
                "{verdict:?} ({direction:?}), but mailparse reads {what}"
            ));
        }
    }
    None
}

/// Delta Chat decrypts a `multipart/encrypted` root of exactly an
/// `application/pgp-encrypted` and an `application/octet-stream` part,
/// the latter's decoded body; anything else it shows as it is.
fn encrypted_differs(ours: &ParsedMessage<'_>, theirs: &ParsedMail<'_>) -> Option<String> {
    let types: Vec<&str> = theirs
        .subparts
        .iter()
        .map(|part| part.ctype.mimetype.as_str())
        .collect();
    if theirs.ctype.mimetype != "multipart/encrypted"
        || types != ["application/pgp-encrypted", "application/octet-stream"]
    {
        return Some(format!("{} of {types:?}", theirs.ctype.mimetype));
    }
    // The same armor: the same octets but for whitespace, which armor
    // readers skip (a quoted-printable CR LF decodes to LF in one parser).
    let their_payload = theirs.subparts.get(1)?.get_body_raw().ok();
    let our_payload = ours.pgp_mime_payload();
    if their_payload.as_deref().map(without_whitespace) != our_payload.map(without_whitespace) {
        return Some("another payload".to_owned());
    }
    None
}

fn securejoin_differs(theirs: &ParsedMail<'_>) -> Option<String> {
    let [text] = theirs.subparts.as_slice() else {
        return Some(format!("{} parts", theirs.subparts.len()));
    };
    let body = text.get_body().unwrap_or_default();
    let step = body.trim().to_ascii_lowercase();
    if text.ctype.mimetype != "text/plain"
        || !["secure-join: vc-request", "secure-join: vg-request"].contains(&step.as_str())
    {
        return Some(format!("{} with another text", text.ctype.mimetype));
    }
    None
}

fn report_differs(theirs: &ParsedMail<'_>) -> Option<String> {
    let types: Vec<&str> = theirs
        .subparts
        .iter()
        .map(|part| part.ctype.mimetype.as_str())
        .collect();
    let report_type = theirs.ctype.params.get("report-type").map(String::as_str);
    let status_ok = matches!(
        types.get(1).copied(),
        Some("message/delivery-status" | "message/global-delivery-status")
    );
    if theirs.ctype.mimetype != "multipart/report"
        || report_type.map(str::to_ascii_lowercase).as_deref() != Some("delivery-status")
        || types.first() != Some(&"text/plain")
        || !status_ok
        || types.len() > 3
    {
        return Some(format!("{} of {types:?}", theirs.ctype.mimetype));
    }
    None
}

fn without_whitespace(octets: &[u8]) -> Vec<u8> {
    octets
        .iter()
        .copied()
        .filter(|octet| !octet.is_ascii_whitespace())
        .collect()
}

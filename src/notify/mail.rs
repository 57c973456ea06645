//! The SMTP transport every email goes through: lettre's async client, configured by `[mail]`
//! (plain SMTP for a relay on a trusted network, STARTTLS, or implicit TLS; AUTH with a user
//! name and password; extra root certificates for a private relay). Transition emails
//! ([`super::email`]) and integrity alerts (`integrity`) both send with [`Mailer`].
//!
//! A message is plain UTF-8 text. Addresses are parsed (never pasted into headers), so a name
//! holding a line break or angle brackets cannot add a header or a recipient.

use crate::config::{smtp_host_port, MailSettings, MailTls, Settings};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("`{0}` is not host:port")]
    Relay(String),
    #[error("`{0}` is not an email address")]
    Address(String),
    #[error("cannot read the relay's CA file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("TLS settings for {host}: {source}")]
    Tls {
        host: String,
        source: lettre::transport::smtp::Error,
    },
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
    /// The relay refused or the connection failed; the text says which and why.
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// An SMTP relay to send through, with the sender's address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port`, for logs.
    relay: String,
}

/// How to reach a relay: what `[mail]` says, or what the older `[integrity] smtp` said.
pub struct Relay<'a> {
    pub smtp: &'a str,
    pub tls: MailTls,
    pub credentials: Option<(&'a str, &'a str)>,
    pub ca_file: Option<&'a std::path::Path>,
    pub timeout: Duration,
}

impl<'a> Relay<'a> {
    /// `[mail]`'s relay, if `smtp` is set.
    pub fn of(m: &'a MailSettings) -> Option<Relay<'a>> {
        Some(Relay {
            smtp: m.smtp.as_deref()?,
            tls: m.tls,
            credentials: m.username.as_deref().zip(m.password.as_deref()),
            ca_file: m.ca_file.as_deref(),
            timeout: m.timeout,
        })
    }
}

impl Mailer {
    /// A mailer for `relay`, sending as `from`. Nothing is connected yet: every send opens
    /// its own connection (alerts and transitions are rare; a pool would hold idle sockets).
    pub fn new(relay: &Relay<'_>, from: &str) -> Result<Mailer, MailError> {
        let (host, port) =
            smtp_host_port(relay.smtp).ok_or_else(|| MailError::Relay(relay.smtp.to_owned()))?;
        let from: Mailbox = from
            .parse()
            .map_err(|_| MailError::Address(from.to_owned()))?;
        let tls = |host: &str| -> Result<TlsParameters, MailError> {
            let mut b = TlsParameters::builder(host.to_owned());
            if let Some(path) = relay.ca_file {
                let pem = std::fs::read(path).map_err(|source| MailError::CaFile {
                    path: path.display().to_string(),
                    source,
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|source| MailError::Tls {
                    host: host.to_owned(),
                    source,
                })?;
                b = b.add_root_certificate(cert);
            }
            b.build().map_err(|source| MailError::Tls {
                host: host.to_owned(),
                source,
            })
        };
        let mode = match relay.tls {
            MailTls::None => Tls::None,
            // Required: a relay that does not offer STARTTLS is an error, never plain text.
            MailTls::Starttls => Tls::Required(tls(host)?),
            MailTls::Tls => Tls::Wrapper(tls(host)?),
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(mode)
            .timeout(Some(relay.timeout));
        if let Some((user, password)) = relay.credentials {
            b = b.credentials(Credentials::new(user.to_owned(), password.to_owned()));
        }
        Ok(Mailer {
            transport: b.build(),
            from,
            relay: relay.smtp.to_owned(),
        })
    }

    /// The mailer of `[mail]`, or `None` when `[mail] smtp` is unset.
    pub fn from_settings(s: &Settings) -> Result<Option<Mailer>, MailError> {
        Relay::of(&s.mail)
            .map(|r| Mailer::new(&r, &s.mail.from))
            .transpose()
    }

    /// `host:port` of the relay.
    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// Sends one plain-text message to every address of `to` (one message, all of them in
    /// its `To`). Nothing is sent when `to` is empty.
    pub async fn send(&self, to: &[String], subject: &str, body: &str) -> Result<(), MailError> {
        if to.is_empty() {
            return Ok(());
        }
        let mut rcpt = Mailboxes::new();
        for a in to {
            rcpt.push(a.parse().map_err(|_| MailError::Address(a.clone()))?);
        }
        let msg = Message::builder()
            .from(self.from.clone())
            .mailbox(lettre::message::header::To::from(rcpt))
            .subject(subject.replace(['\r', '\n'], " "))
            .header(ContentType::TEXT_PLAIN)
            .body(text_body(body))?;
        self.transport.send(msg).await?;
        Ok(())
    }
}

/// `body` as sent: plain 7-bit text when it is ASCII with lines a relay accepts (RFC 5322:
/// 998 characters), so a link stays whole for a reader of the raw message; otherwise what
/// lettre picks (quoted-printable or base64), which folds long lines.
fn text_body(body: &str) -> Body {
    let crlf = body
        .replace("\r\n", "\n")
        .replace('\r', "")
        .replace('\n', "\r\n");
    if body.is_ascii() && crlf.split("\r\n").all(|l| l.len() <= 998) {
        Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(body.to_owned())
    }
}

/// The mailer and sender for integrity alerts: `[mail]` when its `smtp` is set, else the
/// deprecated `[integrity] smtp` over plain SMTP (what alerts always did); `None` when
/// neither is set. The sender is `[integrity] mail_from`, else `[mail] from`.
pub fn alert_mailer(s: &Settings) -> Result<Option<Mailer>, MailError> {
    let from = s.integrity.mail_from.as_deref().unwrap_or(&s.mail.from);
    if let Some(r) = Relay::of(&s.mail) {
        return Mailer::new(&r, from).map(Some);
    }
    let Some(smtp) = s.integrity.smtp.as_deref() else {
        return Ok(None);
    };
    let relay = Relay {
        smtp,
        tls: MailTls::None,
        credentials: None,
        ca_file: None,
        timeout: Duration::from_secs(10),
    };
    Mailer::new(&relay, from).map(Some)
}

/// The domain the project's managers are alerted at: `[integrity] mail_domain`, else
/// `[mail] domain`.
pub fn alert_domain(s: &Settings) -> Option<&str> {
    s.integrity
        .mail_domain
        .as_deref()
        .or(s.mail.domain.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_use_mail_when_set_and_the_old_keys_otherwise() {
        let mut s = Settings::default();
        assert!(alert_mailer(&s).unwrap().is_none());
        s.integrity.smtp = Some("127.0.0.1:2525".into());
        assert_eq!(alert_mailer(&s).unwrap().unwrap().relay(), "127.0.0.1:2525");
        s.mail.smtp = Some("relay.example.org:587".into());
        s.mail.domain = Some("example.org".into());
        assert_eq!(
            alert_mailer(&s).unwrap().unwrap().relay(),
            "relay.example.org:587"
        );
        assert_eq!(alert_domain(&s), Some("example.org"));
        s.integrity.mail_domain = Some("old.example.org".into());
        assert_eq!(alert_domain(&s), Some("old.example.org"));
    }

    #[test]
    fn ascii_text_goes_as_it_is_and_other_text_encoded() {
        let link = format!(
            "  https://airlock.example.org/ui/transfers/{}",
            "x".repeat(80)
        );
        let b = text_body(&format!("Hello,\n{link}\n"));
        assert_eq!(b.encoding(), ContentTransferEncoding::SevenBit);
        assert_eq!(b.into_vec(), format!("Hello,\r\n{link}\r\n").into_bytes());
        let b = text_body("Grüße\n");
        assert_ne!(b.encoding(), ContentTransferEncoding::SevenBit);
        let b = text_body(&"x".repeat(1200));
        assert_ne!(b.encoding(), ContentTransferEncoding::SevenBit);
    }

    #[test]
    fn a_bad_sender_or_relay_is_refused_before_any_connection() {
        let r = Relay {
            smtp: "nohost",
            tls: MailTls::None,
            credentials: None,
            ca_file: None,
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(
            Mailer::new(&r, "a@b.org"),
            Err(MailError::Relay(_))
        ));
        let r = Relay {
            smtp: "localhost:25",
            ..r
        };
        assert!(matches!(
            Mailer::new(&r, "a@b.org>\r\nBcc: x@y.org"),
            Err(MailError::Address(_))
        ));
    }
}

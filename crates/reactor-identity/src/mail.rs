//! Email: every message goes through an outbox table (so it survives a restart and any
//! replica may deliver it), then through one of two adapters: SMTP (lettre) for servers, and
//! for `reactor dev` a console mailbox that prints each message and keeps it readable at a
//! dev-only endpoint, so flows that need an email can be completed locally.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;

use crate::store::{OutboxEmail, Store};

/// How SMTP connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text: only for a relay on the same machine.
    None,
    /// STARTTLS upgrade (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender, e.g. `Acme <no-reply@acme.test>`.
    pub from: String,
    pub tls: SmtpTls,
}

/// Where outbox messages go.
#[derive(Debug, Clone)]
pub enum MailerConfig {
    /// Nowhere yet: messages wait in the outbox, and a warning says so.
    Disabled,
    /// Printed to the console (and listed by `GET /auth/v1/dev/mailbox`).
    Console,
    Smtp(SmtpConfig),
}

const MAX_ATTEMPTS: i64 = 5;

enum Transport {
    Console,
    Smtp(Box<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>),
}

/// Starts the delivery loop for `config`; the returned `Notify` wakes it when a message is
/// queued in this process (other replicas' messages are found by polling).
pub(crate) fn start_dispatcher(
    store: Store,
    config: &MailerConfig,
) -> Result<Option<Arc<Notify>>, String> {
    let transport = match config {
        MailerConfig::Disabled => return Ok(None),
        MailerConfig::Console => Transport::Console,
        MailerConfig::Smtp(smtp) => {
            let from: Mailbox = smtp
                .from
                .parse()
                .map_err(|e| format!("invalid SMTP sender `{}`: {e}", smtp.from))?;
            let builder = match smtp.tls {
                SmtpTls::None => {
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                }
                SmtpTls::StartTls => {
                    AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                        .map_err(|e| e.to_string())?
                }
                SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                    .map_err(|e| e.to_string())?,
            };
            let mut builder = builder
                .port(smtp.port)
                .timeout(Some(Duration::from_secs(20)));
            if let (Some(user), Some(pass)) = (&smtp.username, &smtp.password) {
                builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
            }
            Transport::Smtp(Box::new((builder.build(), from)))
        }
    };
    let wake = Arc::new(Notify::new());
    let woken = Arc::clone(&wake);
    tokio::spawn(async move {
        loop {
            loop {
                let email = match store.claim_email(MAX_ATTEMPTS).await {
                    Ok(Some(email)) => email,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the email outbox");
                        break;
                    }
                };
                if let Err(error) = deliver(&transport, &email).await {
                    tracing::warn!(id = email.id, to = %email.to, %error, "email delivery failed; will retry");
                    if let Err(e) = store.email_failed(email.id, &error).await {
                        tracing::warn!(error = %e, "cannot record the failed delivery");
                    }
                    break;
                }
            }
            tokio::select! {
                () = woken.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
    Ok(Some(wake))
}

async fn deliver(transport: &Transport, email: &OutboxEmail) -> Result<(), String> {
    match transport {
        Transport::Console => {
            println!(
                "\n── email to {} ──\nSubject: {}\n\n{}\n── end of email (also at GET /auth/v1/dev/mailbox) ──\n",
                email.to, email.subject, email.body
            );
            Ok(())
        }
        Transport::Smtp(smtp) => {
            let (smtp, from) = &**smtp;
            let to: Mailbox = email
                .to
                .parse()
                .map_err(|e| format!("invalid recipient: {e}"))?;
            let message = Message::builder()
                .from(from.clone())
                .to(to)
                .subject(&email.subject)
                .body(email.body.clone())
                .map_err(|e| e.to_string())?;
            smtp.send(message)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

"""Bounces and complaints that arrive after a digest was accepted: delivery status notifications
(RFC 3464) and abuse reports (RFC 5965 ARF) read from a bounce mailbox (`mailboxes`,
`reports`, `mailbox_job`), and the providers' signed webhooks (`ses`, `postmark`, `sendgrid`,
`mailgun`), each turned into `ReportedEvent`s that `record` matches to a digest (`app.mail.
return_path`) and applies once: a hard bounce counts toward the bounce limit, a complaint
unsubscribes. `status_codes` says what an SMTP status means for the subscriber.

May import `app.mail`'s other modules, `app.subscribers` and the core."""

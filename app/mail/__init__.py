"""Mail: turning a frozen digest into a message and delivering it. `templates` (Jinja with CSS
inlined once), `paper_rows` (each paper's rows rendered once per run), `message` (MIME, headers,
DKIM), `transports` (SMTP pool, Maildir), `queue` (claims, leases and outcomes in the database).

May import: `app.digests`, `app.subscribers` and the core. Never an entry point."""

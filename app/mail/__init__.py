"""Mail: turning a frozen digest into a message and delivering it. `templates` (Jinja with CSS
inlined once), `paper_rows` (each paper's rows rendered once per run), `message` (MIME, headers,
DKIM), `transports` (SMTP pool, Maildir), `replies` (what a server's answer means: a bounce, or a
refusal about us), `queue` (claims, leases and outcomes in the database), `workers` (send
workers' heartbeats and reclaiming a dead worker's leases), `delivery` and `outcomes` (the
engine and its outcome writer).

May import: `app.digests`, `app.subscribers` and the core. Never an entry point."""

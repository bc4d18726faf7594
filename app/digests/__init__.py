"""Digests: who is due, which papers each reader's digest holds, and freezing it. `candidates`
(the day's papers), `compose` (plan and freeze), `views` (what a digest shows, for mail and web),
`front_page` (the public list of today's trending papers).

May import: `app.ranking`, `app.subscribers` and the core. Never `app.mail` or an entry point."""

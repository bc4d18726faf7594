"""Subscribers: every rule about a reader. `rules` (preferences, signup, confirmation,
unsubscribing), `tokens` (signed link tokens), `localtime` (a reader's local date and send hour),
`csv_io` (import and export).

May import: the core only; the pipeline stages import this package, never the reverse."""

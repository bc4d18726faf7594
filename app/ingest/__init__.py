"""Ingest: the first stage of the pipeline. Reads paper sources (`sources/`, one parser per format,
no database), fetches URLs (`fetch`), validates and dedupes a batch (`normalise`), parses large
files in worker processes (`parsing_worker`), writes papers in bulk (`upsert`) and keeps each run's
record (`runs`: counters, owner and heartbeat, interrupted runs closed).

May import: the core (`app.config`, `app.db`, `app.models`, `app.pgcopy`). Nothing later in the
pipeline."""

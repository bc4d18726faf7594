"""Ingest: the first stage of the pipeline. Reads paper sources (`sources/`, one parser per format,
no database), fetches URLs (`fetch`), validates and dedupes a batch (`normalise`), parses large
files in worker processes (`parsing_worker`) and writes papers in bulk (`upsert`).

May import: the core (`app.config`, `app.db`, `app.models`, `app.pgcopy`). Nothing later in the
pipeline."""

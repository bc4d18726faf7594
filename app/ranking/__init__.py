"""Ranking: how relevant and how trending each candidate paper is for a topic, and which papers
each reader gets. `relevance` (BM25F over title and abstract), `embedding` (sentence vectors
on onnxruntime, the model shipped in `models/`), `selection` (trend and each reader's picks),
`evaluation` (nDCG over judged topics).

May import: `app.ingest` (evaluation reads a corpus with the ingest parsers) and the core."""

"""The HTTP API (FastAPI) that serves search and ingestion, and the web UI in `web/`.

Depends on `blipsearch.search` (queries) and `blipsearch.indexer` (upload and ingest jobs), never on `train`.
"""

"""The HTTP API (FastAPI) that serves search and ingestion, and the web UI in `web/`.

Depends on `blipsearch.search` and `blipsearch.indexer`. Arrives with issue #5.
"""

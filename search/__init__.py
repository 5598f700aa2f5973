"""The read path: encode a query, ITC top-k from the vector index, ITM re-rank, captions, filters.

Depends on the shared core; used by the API. Arrives with issue #4.
"""

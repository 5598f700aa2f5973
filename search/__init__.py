"""The read path: encode a query, ITC top-k from the vector index, ITM re-rank, captions, filters.

Depends on the shared core only; the API and the command line use it.
"""

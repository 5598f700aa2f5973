"""The write path: image collections (folders, catalog manifests) into the vector index and catalog.

Depends only on the shared core (models, storage, settings), never on `search` or `api`.
"""

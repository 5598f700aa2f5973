"""The write path: image collections (folders, catalog manifests) into the vector index and catalog.

Depends only on the shared core (`blipsearch.models`, storage, settings). Arrives with issue #3.
"""

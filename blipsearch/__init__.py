"""blipsearch: cross-modal image search on BLIP.

The shared core (settings, the BLIP model layer, storage) lives here; the pipeline stages
(`blipsearch.indexer`, `blipsearch.search`, `blipsearch.api`) depend on it, never the reverse.
"""

__version__ = "0.1.0"

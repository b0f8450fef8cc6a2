"""The storage stage: the ledger, the batch folder behind a Writer, sidecars, the results reader.

Owns what is on disk and the one public way to read it back (every job of a batch with its
ledger record and files), which status, retry, export and the viewers use. Never imports
httpx, anyio, the provider client or the engine.
"""

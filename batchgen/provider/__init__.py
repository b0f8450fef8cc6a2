"""The provider stage: the only code that speaks HTTP (targets, channels, client, answers).

Owns the API's shape behind the small ``Provider`` protocol (submit, task result, fetch
image), error classification, pacing and the image check. Never imports the engine, storage,
the CLI or the simulator. Importing this package loads nothing heavy: ``targets`` (names and
keys, which the manifest checks) is free of httpx; the client loads it on use.
"""

"""The engine stage: one batch's task group (runner, scheduler, collector, polling, stats).

Assembled from parts that can be given (transports, key, clock, writer), so tests and other
front ends inject rather than impersonate. Never imports the CLI or the simulator, and never
prints: what a person reads is rendered by ``batchgen.cli``.
"""

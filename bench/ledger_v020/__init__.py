"""The ledger's admission and metering as aifhub 0.2.0 had them (before the state gateway, the sessions-based
balances and the batched metering tick), kept as they were so that ``make bench`` measures the current
ledger against them in the same run, on the same machine and the same database schema.

Only the benchmarks import this package; nothing of aifhub uses it.
"""

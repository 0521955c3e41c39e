"""What every scenario shares, one module per concern:

cli         the shared options, `python -m bench.scenarios.<name>`, progress lines
paths       the checkout
servers     server subprocesses (the API, anything under uvicorn) and their logs
session     BenchSession: one run's database, pgbouncer and servers, all stopped at its end
cpu         CPU time of process trees (/proc)
users       users with tokens, avatars, conversations
clients     blocking one-connection HTTP clients for the sequential scenarios
load        closed-loop load: wrk with a generated script, or `loadgen`
loadgen     the raw-HTTP asyncio load client (a process of its own)
throughput  several servers under the same load, rounds alternating
workloads   the persona switch and chat turn request sets, first-request checks
database    what the database says afterwards (versions, messages by status)
pgbench     pgbench against fresh databases of one cluster, rounds alternating
stats       latency statistics
report      rows, ratios, targets, the summary table
results     the machine and code measured, the JSON file under bench/results/
"""

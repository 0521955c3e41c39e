"""What every scenario shares, one module per concern (bench/README.md, "Layout", lists
them): servers and the run session, /proc CPU accounting, load generation, workloads,
database checks, pgbench, statistics, the report and the results file."""

"""The benchmark scenarios: each `run(args)` returns its summary rows; each also runs
alone as `python -m bench.scenarios.<name>`."""

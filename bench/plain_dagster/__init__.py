"""A plain Dagster project, the baseline FlowPilot's trigger benchmarks compare against: a 3-op
job doing trivial work and a sensor that starts one run per new row of a table (the plain
equivalent of a webhook landing in a database). Everything else is Dagster's default."""

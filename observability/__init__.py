"""askdb observability: Prometheus metrics, the /ask quality log, tracing spans and the report CLI.

See README.md in this folder for metric names, the log format and how to read reports.
"""

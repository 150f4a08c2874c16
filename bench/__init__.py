"""Benchmark harness: our attach/sync against s5cmd, rclone and raw curl on a local S3 server.

Run ``.venv/bin/python -m bench --help``; results and method are in docs/performance.md.
"""

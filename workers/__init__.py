"""Render worker processes: each holds one V8 isolate with the server bundle loaded.

The server starts a worker with ``python -m workers`` and talks to it over the
worker's stdin and stdout with the frames defined in :mod:`workers.protocol`.
"""

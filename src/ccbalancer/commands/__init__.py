"""The command line's commands: each takes the parsed arguments, prints, returns an exit status.

``cli.py`` owns argv and dispatches here; the balancer itself (``server.py``, ``runtime.py``)
never imports this package. ``stats`` reads the request history that ``observe/`` records.
"""

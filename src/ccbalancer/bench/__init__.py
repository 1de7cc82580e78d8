"""``ccbalancer bench``: the load generator that measures what the balancer adds.

``cli`` parses the flags and runs the scenarios (``scenarios``) against a mock and a balancer
started as child processes (``procs``); ``runner`` runs one repeat (direct, then through the
balancer), ``client`` generates the load, ``measure`` turns what the clients saw into
latencies and completeness, ``report`` prints the table and writes the JSON, ``soak`` runs the
long RSS check. Results and the commands that produced them live in ``docs/benchmarks.md``.
"""

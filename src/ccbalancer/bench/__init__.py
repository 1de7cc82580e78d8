"""``ccbalancer bench``: the load generator that measures what the balancer adds.

``cli`` parses the flags and runs the scenarios (``scenarios``) against a mock and a balancer
started as child processes (``procs``), and with ``--reference nginx`` against nginx too
(``reference``), with ``--reference aiohttp`` / ``python`` against the two floors (``floor``);
``runner`` runs one repeat (direct, through the balancer, nginx, the floors and each
``--variant`` of the balancer: ``variants``), ``client`` generates the load, ``measure`` turns
what the clients saw into latencies and completeness, ``compare`` into ratios to nginx, to the
floors and to the plain balancer, ``report`` prints the table and writes the JSON, ``soak``
runs the long RSS check. Results and the commands that produced them live in
``docs/benchmarks.md``.
"""

"""Scale-out: brokers that lend frames to workers and send again what a lost one held (``broker``),
workers that join a running pipeline from another process or host (``worker``, ``worker_cli``:
``colorize worker``), and the CurveZMQ keys that admit them (``keys``: ``colorize keys``)."""

"""Observation: per-frame tracing of the stage processes (``tracing``), its Perfetto export
(``chrome_trace``), ``colorize profile`` (``profile``), and measuring the machine to choose
``auto`` settings and write a tuned YAML (``tune``: ``colorize tune``)."""

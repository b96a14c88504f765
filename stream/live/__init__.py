"""Live runs: validating and running a network input or a stream output (``run``), and the
``--preview`` web page (``preview``); their stages are ``stages.live_source`` and ``stages.live_sink``."""

"""Stress and property tests for livemod: threaded races and a Hypothesis state machine.

They run in a plain ``pytest`` run (marked ``stress``, so ``-m "not stress"`` skips them) and
are bounded: by default each file takes at most about 20 seconds on two cores.

``LIVEMOD_STRESS_SECONDS``
    Seconds each race test keeps hammering (default 8). The state machine's example count
    scales with it too (12 examples per second of budget, at least 20). Set it higher to soak:
    ``LIVEMOD_STRESS_SECONDS=120 pytest tests/stress``.
"""

"""Fault-injection scenarios for jobrunner: break things on purpose, count what was lost.

Run ``python -m chaos`` (short form) or ``python -m chaos --full``; ``nox -s chaos`` runs the
full form. Every scenario prints one JSON report: jobs lost, jobs run more than once, extra
runs explained by the injected faults, fencing violations and recovery times.
"""

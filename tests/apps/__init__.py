"""Importable handler modules and helpers for jobrunner's own tests.

Subprocess workers import these as ``apps.<module>`` with ``PYTHONPATH`` set to ``tests/``.
"""

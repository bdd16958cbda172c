"""Simulation runner and the ``convcore`` command line."""

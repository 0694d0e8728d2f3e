"""Publishing tooling for the tdnzoo model zoo (not installed with the package).

Run from the repository root: ``python -m hub.publish --help``, ``python -m hub.measure``.
"""

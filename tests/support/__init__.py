"""Helpers shared by the tests and the scripts in benchmarks/.

benchmarks/ imports them; the tests never import benchmarks/.
"""

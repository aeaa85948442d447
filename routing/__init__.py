"""Routing engine: road graph, snapping, exact travel-time matrices, paths (and the VRP, elsewhere).

Import modules, not names: `from routing import graph, snap, matrix, paths`.
Nothing here needs a server; every function works on numpy arrays.
"""

"""Lanes: pure stages around canonical objects, one module per lane.

The outer side builds canonical objects from ingested input; the inner side
re-checks them before rebuilding output. No I/O here.
"""

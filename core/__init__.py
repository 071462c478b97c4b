"""Shared foundations: database, errors, clock, money, ids and HTTP API helpers.

Nothing in ``core`` imports ``notifications``, ``security`` or ``wallet``.
"""

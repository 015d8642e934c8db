"""Veil's client: the network client (onion requests through three hops) and, on top, messaging."""

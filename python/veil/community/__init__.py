"""The community server (Veil's SOGS): open groups served to clients through onion requests.

``config`` (community.toml and the server key), ``db`` (SQLite in WAL mode; all SQL), ``rpc`` (open,
verify, dispatch), ``server`` (``POST /v1`` on uvloop), ``cli`` (``veil community …``). The wire
format is in ``veil.protocol.community``; the whole is described in ``docs/community.md``.
"""

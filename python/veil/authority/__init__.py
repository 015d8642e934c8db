"""Directory authorities: who may be a node of a Veil network, signed (``docs/network.md``,
"Admission and the consensus"; the HTTP API in ``docs/protocol.md``, "Directory authorities").

A network's authorities are listed in its network file (``veil.protocol.network_file``). Each one
takes registrations from nodes and checks them (:mod:`veil.authority.registration`,
:mod:`veil.authority.reachability`, :mod:`veil.authority.candidates`), votes every period, computes
the consensus from the votes, and signs it with the others (:mod:`veil.authority.rounds`,
:mod:`veil.authority.ledger`; the formats are :mod:`veil.protocol.consensus`'s). Its settings are
``authority.toml`` (:mod:`veil.authority.config`), its state JSON files in its data directory
(:mod:`veil.authority.files`); :class:`veil.authority.server.Authority` runs it, ``veil authority
init`` and ``veil authority run`` (:mod:`veil.authority.cli`) are its commands.
"""

"""How a client finds its network: the network file it trusts, the seeds it may ask, the consensus.

- **The network file** (the authorities' keys: the one thing the client trusts) is ``--network
  FILE``, else ``VEIL_NETWORK``, else the local devnet's ``.devnet/network.json`` in the current
  directory (:func:`find_network_file`).
- **The seeds** (``HOST:PORT`` of nodes' HTTP ports) are ``--seed`` (repeatable), else
  ``VEIL_SEEDS`` (comma-separated), else the ``seeds`` of the ``devnet.json`` beside the network
  file (``veil devnet up --dir DIR`` writes ``DIR/network.json`` and ``DIR/devnet.json``, so
  ``--network DIR/network.json`` alone finds a devnet's seeds) (:func:`find_seeds`). They are
  trusted with nothing: they only carry the consensus.
- **The consensus** (:func:`open_directory`) is the one saved in the client's home if it still
  passes the check against the network file (``veil.client.directory.check_consensus``), else the
  first that passes from a seed, which is then saved. A saved one that is no longer fresh is
  refreshed by the network client through an onion path, so a client with a valid saved consensus
  contacts a seed directly only when no node gives it a newer one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from veil.client.directory import (
    ClientDirectory,
    ConsensusRefused,
    check_consensus,
    fetch_consensus,
)
from veil.client.home import ClientHome
from veil.client.http import client_session
from veil.clock import now_ms
from veil.errors import InvalidInputError, VeilError
from veil.protocol.network_file import NetworkFile, load_network_file

__all__ = [
    "DEVNET_DIR",
    "NetworkNotFound",
    "find_network_file",
    "find_seeds",
    "network_path",
    "open_directory",
]

DEVNET_DIR = Path(".devnet")
MAX_SEEDS = 64


class NetworkNotFound(VeilError):
    """No network file was given or found, or it cannot be read."""


def network_path(given: Path | None) -> Path:
    """Where the network file is: ``given``, else ``VEIL_NETWORK``, else the devnet's
    (:class:`NetworkNotFound` if that does not exist either)."""
    if given is not None:
        return given
    if os.environ.get("VEIL_NETWORK"):
        return Path(os.environ["VEIL_NETWORK"])
    path = DEVNET_DIR / "network.json"
    if not path.exists():
        raise NetworkNotFound(
            "no network given: use --network FILE, VEIL_NETWORK, or run `veil devnet up`"
        )
    return path


def find_network_file(given: Path | None) -> NetworkFile:
    """The network file (:func:`network_path`), read and parsed."""
    path = network_path(given)
    try:
        return load_network_file(path)
    except InvalidInputError as exc:
        raise NetworkNotFound(f"the network file {exc}") from None


def find_seeds(given: Sequence[str], network_file: Path | None = None) -> list[str]:
    """The seeds: ``given``, else ``VEIL_SEEDS``, else the ``seeds`` of the ``devnet.json``
    beside ``network_file`` (by default the devnet's, ``.devnet/devnet.json``); perhaps none."""
    if given:
        return list(given)
    if os.environ.get("VEIL_SEEDS"):
        return [s.strip() for s in os.environ["VEIL_SEEDS"].split(",") if s.strip()]
    beside = (network_file.parent if network_file is not None else DEVNET_DIR) / "devnet.json"
    try:
        seeds = json.loads(beside.read_text(encoding="utf-8"))["seeds"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [s for s in seeds if isinstance(s, str)][:MAX_SEEDS] if isinstance(seeds, list) else []


async def open_directory(
    network: NetworkFile, seeds: Sequence[str], home: ClientHome | None
) -> ClientDirectory:
    """The client's directory: the consensus saved in ``home`` if it passes, else one from the
    seeds (saved in ``home``); :class:`ConsensusRefused` with why none can be used."""
    signed = None
    saved = home.saved_consensus() if home is not None else None
    if home is not None and saved is not None:
        try:
            signed = check_consensus(saved, network, str(home.consensus_path), now_ms())
        except ConsensusRefused:
            signed = None  # expired, or of another network file: fetch one
    if signed is None:
        if not seeds:
            raise ConsensusRefused(
                "no consensus held and no seed to fetch one from: use --seed HOST:PORT, "
                "VEIL_SEEDS, or run `veil devnet up`"
            )
        async with client_session() as session:
            signed = await fetch_consensus(session, seeds, network)
        if home is not None:
            home.save_consensus(signed)
    keep = home.save_consensus if home is not None else None
    return ClientDirectory(network, signed, seeds=seeds, keep=keep)

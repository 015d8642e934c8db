"""The node's typed RPC errors: an HTTP status and a text safe to show a client.

The texts are those of Session's storage servers (``docs/rpc.md``, "Errors"), so that a client
written for them recognises each one. An error's body is its text (``text/plain``), except a
wrong-swarm answer (421), whose body is the account's swarm in JSON as ``get_swarm`` gives it.
"""

from __future__ import annotations

from typing import Any

from veil.errors import VeilError

__all__ = ["RpcError"]


class RpcError(VeilError):
    """An error answered to the client: ``status`` and the text ``message`` (or ``payload``)."""

    def __init__(self, status: int, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.payload = payload
        """A JSON body instead of the text (the 421 swarm)."""

    def body(self) -> str | dict[str, Any]:
        return self.message if self.payload is None else self.payload

    @classmethod
    def invalid(cls, message: str) -> RpcError:
        """A request that does not parse: 400 ``invalid request: …``."""
        return cls(400, f"invalid request: {message}")

    @classmethod
    def quota_exceeded(cls) -> RpcError:
        return cls(507, "the account's storage quota is exceeded")

    @classmethod
    def wrong_swarm(cls, swarm: dict[str, Any]) -> RpcError:
        return cls(421, "this node does not serve the account", swarm)

    @classmethod
    def unavailable(cls, message: str) -> RpcError:
        return cls(503, message)

    @classmethod
    def storage_full(cls) -> RpcError:
        return cls(507, "the node's storage is full")

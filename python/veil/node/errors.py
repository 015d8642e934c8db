"""The node's typed RPC errors: an HTTP status, a stable code, a message safe to show a client."""

from __future__ import annotations

from veil.errors import VeilError

__all__ = ["RpcError"]


class RpcError(VeilError):
    """An error answered to the client as ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(
        self, status: int, code: str, message: str, extra: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}

    def body(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}

    @classmethod
    def bad_request(cls, message: str) -> RpcError:
        return cls(400, "bad_request", message)

    @classmethod
    def unauthorized(cls, message: str) -> RpcError:
        return cls(401, "unauthorized", message)

    @classmethod
    def not_acceptable(cls, message: str) -> RpcError:
        return cls(406, "clock_skew", message)

    @classmethod
    def too_large(cls, message: str) -> RpcError:
        return cls(413, "too_large", message)

    @classmethod
    def quota_exceeded(cls) -> RpcError:
        return cls(507, "quota_exceeded", "the account's storage quota is exceeded")

    @classmethod
    def wrong_swarm(cls, swarm: list[dict[str, object]]) -> RpcError:
        return cls(421, "wrong_swarm", "this node does not serve the account", {"swarm": swarm})

    @classmethod
    def unavailable(cls, message: str) -> RpcError:
        return cls(503, "unavailable", message)

    @classmethod
    def storage_full(cls) -> RpcError:
        return cls(507, "storage_full", "the node's storage is full")

"""The community server's database: one SQLite file in WAL mode. Every SQL statement is here.

Why SQLite in WAL mode: one server process owns the data and serves it from one thread, so there is
no need for a database server, its connection pool or its network hop: a poll is an index lookup
in the process's own page cache (microseconds, not a round trip). WAL lets readers run while a
writer commits, so the operator's ``veil community add-room`` / ``add-moderator`` (another process)
work while the server runs, and a commit is one sequential append to the log. With
``synchronous=NORMAL`` a commit does not wait for the disk (the log is synced at checkpoints): a
power loss may lose the last commits but never corrupts the file, which suits a chat server (the
client whose post was lost sees it missing from the next poll). What SQLite cannot do is let
several machines write one community; a community this large is beyond Veil's scope.

Schema (version 2; ``PRAGMA user_version`` holds the version and :data:`MIGRATIONS` lead from each
version to the next)::

    rooms       id, token (unique), name, description, read_only, created_ms,
                seqno (the room's counter: +1 on every change), info_seqno (seqno of the latest
                change of the room's info: moderators, pinned posts)
    users       id, pubkey (blinded ID, unique), moderator, admin, banned (server-wide), created_ms
    room_users  (room, user): moderator, admin, banned (this room), last_active_ms
    posts       id, room, user, seqno (the room's seqno of the post's latest change), posted_ms,
                edited_ms, name, text (both NULL once deleted: a tombstone), reply_to, pinned_ms,
                proof_method, proof_params, proof_ts, proof_nonce, proof_sig (version 2: the
                signed request that gave the post its text, see :class:`Proof`; NULL for posts
                stored before version 2, and for tombstones)
    reactions   (post, emoji, user): at_ms
    inbox       id (AUTOINCREMENT: never reused), recipient, sender, posted_ms, expires_ms, data

Every change to a post (new, edit, delete, reaction, pin) gives it the room's next seqno, so a poll
is ``WHERE room = ? AND seqno > ? ORDER BY seqno LIMIT ?`` on the unique index
``posts(room, seqno)``: an index range scan whose cost is the number of changes returned.
"""

from __future__ import annotations

import sqlite3
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from veil.node.config import ConfigError

__all__ = [
    "LATEST_SQL",
    "MIGRATIONS",
    "POLL_SQL",
    "SCHEMA_VERSION",
    "CommunityDb",
    "Perms",
    "Post",
    "Proof",
    "Room",
]

_SCHEMA_V1 = """
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    read_only INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    seqno INTEGER NOT NULL DEFAULT 0,
    info_seqno INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    pubkey TEXT NOT NULL UNIQUE,
    moderator INTEGER NOT NULL DEFAULT 0,
    admin INTEGER NOT NULL DEFAULT 0,
    banned INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE INDEX users_moderators ON users(id) WHERE moderator OR admin;
CREATE TABLE room_users (
    room INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    moderator INTEGER NOT NULL DEFAULT 0,
    admin INTEGER NOT NULL DEFAULT 0,
    banned INTEGER NOT NULL DEFAULT 0,
    last_active_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
CREATE INDEX room_users_active ON room_users(room, last_active_ms);
CREATE INDEX room_users_moderators ON room_users(room) WHERE moderator OR admin;
CREATE TABLE posts (
    id INTEGER PRIMARY KEY,
    room INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user INTEGER NOT NULL REFERENCES users(id),
    seqno INTEGER NOT NULL,
    posted_ms INTEGER NOT NULL,
    edited_ms INTEGER,
    name TEXT,
    text TEXT,
    reply_to INTEGER,
    pinned_ms INTEGER
);
CREATE UNIQUE INDEX posts_room_seqno ON posts(room, seqno);
CREATE INDEX posts_pinned ON posts(room) WHERE pinned_ms IS NOT NULL;
CREATE TABLE reactions (
    post INTEGER NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    emoji TEXT NOT NULL,
    user INTEGER NOT NULL REFERENCES users(id),
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (post, emoji, user)
) WITHOUT ROWID;
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient INTEGER NOT NULL REFERENCES users(id),
    sender INTEGER NOT NULL REFERENCES users(id),
    posted_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX inbox_recipient ON inbox(recipient, id);
CREATE INDEX inbox_expiry ON inbox(expires_ms);
"""

_PROOFS_V2 = """
ALTER TABLE posts ADD COLUMN proof_method TEXT;
ALTER TABLE posts ADD COLUMN proof_params BLOB;
ALTER TABLE posts ADD COLUMN proof_ts INTEGER;
ALTER TABLE posts ADD COLUMN proof_nonce BLOB;
ALTER TABLE posts ADD COLUMN proof_sig BLOB;
"""
"""Version 2: each post keeps the signed request that gave it its current text (rows already
there get NULL: no proof). Adding a column with no default rewrites no row."""

MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _PROOFS_V2}
"""Version → the script that brings a database of the version before it to that version."""
SCHEMA_VERSION = max(MIGRATIONS)

_CHANGES = (
    "SELECT p.id, p.seqno, u.pubkey, p.name, p.text, p.posted_ms, p.edited_ms, p.reply_to, "
    "p.pinned_ms, p.proof_method, p.proof_params, p.proof_ts, p.proof_nonce, p.proof_sig "
    "FROM posts p JOIN users u ON u.id = p.user "
)
POLL_SQL = _CHANGES + "WHERE p.room = ? AND p.seqno > ? ORDER BY p.seqno LIMIT ?"
"""A poll of one room: the changes after a seqno (an index range scan on posts_room_seqno)."""
LATEST_SQL = _CHANGES + "WHERE p.room = ? AND p.text IS NOT NULL ORDER BY p.seqno DESC LIMIT ?"
"""A first poll of one room: its latest posts (the same index, backwards)."""

_TOUCH_INTERVAL_MS = 60_000
_TOUCH_MAX_ENTRIES = 200_000
_TOUCH_BATCH = 512
_SWEEP_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Room:
    id: int
    token: str
    name: str
    description: str
    read_only: bool
    created_ms: int
    seqno: int
    info_seqno: int


@dataclass(frozen=True, slots=True)
class Perms:
    """What one user may do in one room (or server-wide, for ``room`` None)."""

    banned: bool = False
    moderator: bool = False
    admin: bool = False
    global_moderator: bool = False
    global_admin: bool = False


@dataclass(frozen=True, slots=True)
class Post:
    id: int
    user: int
    deleted: bool
    pinned: bool


@dataclass(frozen=True, slots=True)
class Proof:
    """The signed request (``post`` or ``edit``) that gave a post its current text, as stored:
    ``params`` is the canonical JSON (``canonical_params``) of the request's params without
    ``text`` — the text is the post's own column, so it is not stored twice; a poll puts it back
    (the canonical JSON sorts keys, so the params rebuilt sign to the same bytes)."""

    method: str
    params: bytes
    ts_ms: int
    nonce: bytes
    signature: bytes


class CommunityDb:
    """The database, used from one thread (the server's event loop)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._touched: dict[tuple[int, int], int] = {}
        self._pending_touches: dict[tuple[int, int], int] = {}
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        try:
            self._conn.execute("PRAGMA busy_timeout = 5000")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and str(path) != ":memory:":
                raise ConfigError(f"{path}: cannot switch the database to WAL mode")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise ConfigError(f"{path}: {exc}") from None

    def close(self) -> None:
        self.flush_touches()
        self._conn.close()

    # --- schema -----------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path}: schema version {version} is newer than this server's "
                f"({SCHEMA_VERSION}); upgrade Veil"
            )
        while version < SCHEMA_VERSION:
            version += 1
            # executescript commits first; the script and the version change are one transaction
            script = MIGRATIONS[version]
            self._conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;"
            )

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        row = self._conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    # --- rooms ------------------------------------------------------------------------------------

    _ROOM = (
        "SELECT id, token, name, description, read_only, created_ms, seqno, info_seqno FROM rooms"
    )

    @staticmethod
    def _room(row: tuple[Any, ...]) -> Room:
        return Room(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7])

    def create_room(
        self, token: str, name: str, description: str, *, read_only: bool, now_ms: int
    ) -> Room | None:
        """The new room, or None if the token is taken."""
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM rooms WHERE token = ?", (token,)).fetchone():
                return None
            conn.execute(
                "INSERT INTO rooms (token, name, description, read_only, created_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (token, name, description, int(read_only), now_ms),
            )
        return self.room(token)

    def room(self, token: str) -> Room | None:
        row = self._conn.execute(self._ROOM + " WHERE token = ?", (token,)).fetchone()
        return None if row is None else self._room(row)

    def rooms(self) -> list[Room]:
        return [self._room(row) for row in self._conn.execute(self._ROOM + " ORDER BY token")]

    def active_users(self, room: int, since_ms: int) -> int:
        self.flush_touches()
        return int(
            self._one(
                "SELECT count(*) FROM room_users WHERE room = ? AND last_active_ms >= ?",
                (room, since_ms),
            )
        )

    def post_count(self, room: int) -> int:
        return int(
            self._one("SELECT count(*) FROM posts WHERE room = ? AND text IS NOT NULL", (room,))
        )

    def room_staff(self, room: int) -> tuple[list[str], list[str]]:
        """(everyone who moderates the room, those of them who are admins), by blinded ID: the
        room's own and the server-wide ones."""
        rows = self._conn.execute(
            "SELECT u.pubkey, ru.admin FROM room_users ru JOIN users u ON u.id = ru.user "
            "WHERE ru.room = ? AND (ru.moderator OR ru.admin) "
            "UNION SELECT pubkey, admin FROM users WHERE moderator OR admin",
            (room,),
        ).fetchall()
        moderators = sorted({pubkey for pubkey, _ in rows})
        admins = sorted({pubkey for pubkey, admin in rows if admin})
        return moderators, admins

    def pinned(self, room: int) -> list[int]:
        rows = self._conn.execute(
            "SELECT id FROM posts WHERE room = ? AND pinned_ms IS NOT NULL ORDER BY pinned_ms, id",
            (room,),
        )
        return [row[0] for row in rows]

    def touch(self, room: int, user: int, now_ms: int) -> None:
        """Record that ``user`` polled ``room``: at most once a minute per pair, and written in
        batches (:meth:`flush_touches`: when :data:`_TOUCH_BATCH` wait, before active users are
        counted, at housekeeping and on close), so that many members polling cost one commit, not
        one each. The pairs remembered are bounded; past the bound the least recently written
        go first."""
        key = (room, user)
        last = self._touched.get(key)
        if last is not None and now_ms - last < _TOUCH_INTERVAL_MS:
            return
        self._touched.pop(key, None)  # re-inserted last: the dict is oldest-first
        self._touched[key] = now_ms
        while len(self._touched) > _TOUCH_MAX_ENTRIES:
            del self._touched[next(iter(self._touched))]
        self._pending_touches[key] = now_ms
        if len(self._pending_touches) >= _TOUCH_BATCH:
            self.flush_touches()

    def flush_touches(self) -> None:
        """Write the polls :meth:`touch` recorded, in one transaction."""
        if not self._pending_touches:
            return
        rows = [(room, user, ms) for (room, user), ms in self._pending_touches.items()]
        self._pending_touches.clear()
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO room_users (room, user, last_active_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (room, user) DO UPDATE SET last_active_ms = excluded.last_active_ms",
                rows,
            )

    # --- users and permissions --------------------------------------------------------------------

    def user_id(self, pubkey: str, now_ms: int) -> int:
        """The user's row id, made on first sight."""
        found = self._one("SELECT id FROM users WHERE pubkey = ?", (pubkey,))
        if found is not None:
            return int(found)
        with self._write() as conn:
            row = conn.execute(
                "INSERT INTO users (pubkey, created_ms) VALUES (?, ?) "
                "ON CONFLICT (pubkey) DO UPDATE SET pubkey = pubkey RETURNING id",
                (pubkey, now_ms),
            ).fetchone()
        return int(row[0])

    def perms(self, room: int | None, user: int) -> Perms:
        """The user's permissions in ``room`` (None: server-wide only)."""
        row = self._conn.execute(
            "SELECT u.banned, u.moderator, u.admin, "
            "coalesce(ru.banned, 0), coalesce(ru.moderator, 0), coalesce(ru.admin, 0) "
            "FROM users u LEFT JOIN room_users ru ON ru.room = ? AND ru.user = u.id "
            "WHERE u.id = ?",
            (room, user),
        ).fetchone()
        if row is None:
            return Perms()
        g_banned, g_mod, g_admin, r_banned, r_mod, r_admin = (bool(v) for v in row)
        return Perms(
            banned=g_banned or r_banned,
            moderator=g_mod or g_admin or r_mod or r_admin,
            admin=g_admin or r_admin,
            global_moderator=g_mod or g_admin,
            global_admin=g_admin,
        )

    def set_banned(self, room: int | None, user: int, *, banned: bool) -> bool:
        """Ban or unban in a room (None: server-wide); whether anything changed."""
        with self._write() as conn:
            if room is None:
                cursor = conn.execute(
                    "UPDATE users SET banned = ? WHERE id = ? AND banned != ?",
                    (int(banned), user, int(banned)),
                )
            elif banned:
                cursor = conn.execute(
                    "INSERT INTO room_users (room, user, banned) VALUES (?, ?, 1) "
                    "ON CONFLICT (room, user) DO UPDATE SET banned = 1 WHERE NOT banned",
                    (room, user),
                )
            else:
                cursor = conn.execute(
                    "UPDATE room_users SET banned = 0 WHERE room = ? AND user = ? AND banned",
                    (room, user),
                )
            return cursor.rowcount > 0

    def set_moderator(self, room: int | None, user: int, *, moderator: bool, admin: bool) -> bool:
        """Make the user a moderator (and admin) of a room (None: server-wide), or neither;
        whether anything changed. Changes bump the info of the room (of every room)."""
        flags = (int(moderator or admin), int(admin))
        with self._write() as conn:
            if room is None:
                cursor = conn.execute(
                    "UPDATE users SET moderator = ?, admin = ?, banned = 0 "
                    "WHERE id = ? AND (moderator, admin) != (?, ?)",
                    (*flags, user, *flags),
                )
            elif not flags[0]:
                cursor = conn.execute(
                    "UPDATE room_users SET moderator = 0, admin = 0 "
                    "WHERE room = ? AND user = ? AND (moderator OR admin)",
                    (room, user),
                )
            else:
                cursor = conn.execute(
                    "INSERT INTO room_users (room, user, moderator, admin) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (room, user) DO UPDATE SET moderator = excluded.moderator, "
                    "admin = excluded.admin, banned = 0 "
                    "WHERE (moderator, admin) != (excluded.moderator, excluded.admin)",
                    (room, user, *flags),
                )
            changed = cursor.rowcount > 0
            if changed:
                conn.execute(
                    "UPDATE rooms SET seqno = seqno + 1, info_seqno = seqno + 1 "
                    "WHERE ? IS NULL OR id = ?",
                    (room, room),
                )
            return changed

    # --- posts ------------------------------------------------------------------------------------

    @staticmethod
    def _bump(conn: sqlite3.Connection, room: int) -> int:
        row = conn.execute(
            "UPDATE rooms SET seqno = seqno + 1 WHERE id = ? RETURNING seqno", (room,)
        ).fetchone()
        return int(row[0])

    def post(self, room: int, post_id: int) -> Post | None:
        row = self._conn.execute(
            "SELECT id, user, text IS NULL, pinned_ms IS NOT NULL FROM posts "
            "WHERE id = ? AND room = ?",
            (post_id, room),
        ).fetchone()
        return None if row is None else Post(row[0], row[1], bool(row[2]), bool(row[3]))

    def add_post(
        self,
        room: int,
        user: int,
        name: str,
        text: str,
        *,
        reply_to: int | None,
        now_ms: int,
        proof: Proof | None = None,
    ) -> tuple[int, int]:
        """(post id, seqno). ``proof``: the signed ``post`` request (None: a post no reader can
        verify, as benchmarks and tests may seed)."""
        with self._write() as conn:
            seqno = self._bump(conn, room)
            row = conn.execute(
                "INSERT INTO posts (room, user, seqno, posted_ms, name, text, reply_to, "
                "proof_method, proof_params, proof_ts, proof_nonce, proof_sig) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (room, user, seqno, now_ms, name, text, reply_to, *_proof_columns(proof)),
            ).fetchone()
        return int(row[0]), seqno

    def edit_post(
        self, room: int, post_id: int, text: str, now_ms: int, proof: Proof | None = None
    ) -> int:
        """The new seqno; the edit's ``proof`` replaces the post's (None leaves it none)."""
        with self._write() as conn:
            seqno = self._bump(conn, room)
            conn.execute(
                "UPDATE posts SET text = ?, edited_ms = ?, seqno = ?, proof_method = ?, "
                "proof_params = ?, proof_ts = ?, proof_nonce = ?, proof_sig = ? WHERE id = ?",
                (text, now_ms, seqno, *_proof_columns(proof), post_id),
            )
        return seqno

    def delete_post(self, room: int, post_id: int, now_ms: int) -> int:
        """Leave a tombstone: no text, name, proof, reactions or pin (a pinned post's room info
        changes too)."""
        with self._write() as conn:
            seqno = self._bump(conn, room)
            was_pinned = self._one(
                "SELECT pinned_ms IS NOT NULL FROM posts WHERE id = ?", (post_id,)
            )
            conn.execute(
                "UPDATE posts SET text = NULL, name = NULL, reply_to = NULL, edited_ms = ?, "
                "seqno = ?, pinned_ms = NULL, proof_method = NULL, proof_params = NULL, "
                "proof_ts = NULL, proof_nonce = NULL, proof_sig = NULL WHERE id = ?",
                (now_ms, seqno, post_id),
            )
            conn.execute("DELETE FROM reactions WHERE post = ?", (post_id,))
            if was_pinned:
                conn.execute("UPDATE rooms SET info_seqno = ? WHERE id = ?", (seqno, room))
        return seqno

    def react(
        self, room: int, post_id: int, user: int, emoji: str, *, max_emoji: int, now_ms: int
    ) -> int | None:
        """The new seqno, None if the user had already reacted so; -1 if the post carries
        ``max_emoji`` other reactions."""
        with self._write() as conn:
            known = conn.execute(
                "SELECT count(DISTINCT emoji), max(emoji = ?) FROM reactions WHERE post = ?",
                (emoji, post_id),
            ).fetchone()
            if not known[1] and known[0] >= max_emoji:
                return -1
            cursor = conn.execute(
                "INSERT INTO reactions (post, emoji, user, at_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (post_id, emoji, user, now_ms),
            )
            if cursor.rowcount == 0:
                return None
            seqno = self._bump(conn, room)
            conn.execute("UPDATE posts SET seqno = ? WHERE id = ?", (seqno, post_id))
        return seqno

    def unreact(self, room: int, post_id: int, user: int, emoji: str) -> int | None:
        """The new seqno, None if there was no such reaction."""
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM reactions WHERE post = ? AND emoji = ? AND user = ?",
                (post_id, emoji, user),
            )
            if cursor.rowcount == 0:
                return None
            seqno = self._bump(conn, room)
            conn.execute("UPDATE posts SET seqno = ? WHERE id = ?", (seqno, post_id))
        return seqno

    def pin_count(self, room: int) -> int:
        return int(
            self._one(
                "SELECT count(*) FROM posts WHERE room = ? AND pinned_ms IS NOT NULL", (room,)
            )
        )

    def set_pinned(self, room: int, post_id: int, *, pinned: bool, now_ms: int) -> int | None:
        """Pin or unpin: the new seqno (the post's and the room info's), None if unchanged."""
        with self._write() as conn:
            state = conn.execute(
                "SELECT pinned_ms IS NOT NULL FROM posts WHERE id = ?", (post_id,)
            ).fetchone()
            if state is None or bool(state[0]) == pinned:
                return None
            seqno = self._bump(conn, room)
            conn.execute(
                "UPDATE posts SET pinned_ms = ?, seqno = ? WHERE id = ?",
                (now_ms if pinned else None, seqno, post_id),
            )
            conn.execute("UPDATE rooms SET info_seqno = ? WHERE id = ?", (seqno, room))
        return seqno

    # --- polling ----------------------------------------------------------------------------------

    def changes(
        self, room: int, since: int | None, limit: int, viewer: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """(the posts changed after seqno ``since``, oldest change first, whether more wait).
        ``since`` None: the latest ``limit`` posts not deleted (a first poll)."""
        if since is None:
            rows = self._conn.execute(LATEST_SQL, (room, limit)).fetchall()
            rows.reverse()
            more = False
        else:
            rows = self._conn.execute(POLL_SQL, (room, since, limit + 1)).fetchall()
            more = len(rows) > limit
            del rows[limit:]
        reactions = self._reactions([row[0] for row in rows if row[4] is not None], viewer)
        return [_change(row, reactions.get(row[0])) for row in rows], more

    def _reactions(self, posts: list[int], viewer: int) -> dict[int, dict[str, Any]]:
        if not posts:
            return {}
        marks = ",".join("?" * len(posts))
        rows = self._conn.execute(
            f"SELECT post, emoji, count(*), max(user = ?) FROM reactions "  # noqa: S608
            f"WHERE post IN ({marks}) GROUP BY post, emoji ORDER BY post, min(at_ms), emoji",
            (viewer, *posts),
        )
        found: dict[int, dict[str, Any]] = {}
        for post, emoji, count, mine in rows:
            found.setdefault(post, {})[emoji] = {"count": count, "you": bool(mine)}
        return found

    # --- inbox ------------------------------------------------------------------------------------

    def inbox_count(self, recipient: int, now_ms: int) -> int:
        return int(
            self._one(
                "SELECT count(*) FROM inbox WHERE recipient = ? AND expires_ms > ?",
                (recipient, now_ms),
            )
        )

    def inbox_add(
        self, recipient: int, sender: int, data: bytes, *, now_ms: int, expires_ms: int
    ) -> int:
        with self._write() as conn:
            row = conn.execute(
                "INSERT INTO inbox (recipient, sender, posted_ms, expires_ms, data) "
                "VALUES (?, ?, ?, ?, ?) RETURNING id",
                (recipient, sender, now_ms, expires_ms, data),
            ).fetchone()
        return int(row[0])

    def inbox(
        self, recipient: int, since: int, limit: int, now_ms: int
    ) -> tuple[list[tuple[int, str, int, int, bytes]], bool]:
        """([(id, sender's blinded ID, posted_ms, expires_ms, data)], whether more wait)."""
        rows = self._conn.execute(
            "SELECT i.id, u.pubkey, i.posted_ms, i.expires_ms, i.data FROM inbox i "
            "JOIN users u ON u.id = i.sender "
            "WHERE i.recipient = ? AND i.id > ? AND i.expires_ms > ? ORDER BY i.id LIMIT ?",
            (recipient, since, now_ms, limit + 1),
        ).fetchall()
        return rows[:limit], len(rows) > limit

    def sweep(self, now_ms: int) -> int:
        """Remove up to 10,000 expired inbox messages; how many."""
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM inbox WHERE id IN "
                "(SELECT id FROM inbox WHERE expires_ms <= ? LIMIT ?)",
                (now_ms, _SWEEP_BATCH),
            )
        return cursor.rowcount


def _proof_columns(proof: Proof | None) -> tuple[Any, ...]:
    if proof is None:
        return (None, None, None, None, None)
    return (proof.method, proof.params, proof.ts_ms, proof.nonce, proof.signature)


def _change(row: tuple[Any, ...], reactions: dict[str, Any] | None) -> dict[str, Any]:
    post_id, seqno, author, name, text, posted, edited, reply_to, pinned = row[:9]
    if text is None:
        return {"id": post_id, "seqno": seqno, "deleted": True}
    change: dict[str, Any] = {
        "id": post_id,
        "seqno": seqno,
        "author": author,
        "name": name,
        "text": text,
        "posted": posted,
        "reactions": reactions or {},
        "pinned": pinned is not None,
    }
    if edited is not None:
        change["edited"] = edited
    if reply_to is not None:
        change["reply_to"] = reply_to
    method, params, ts, nonce, signature = row[9:]
    if method is not None:
        change["proof"] = {  # params as signed, but for the text: the change's own (once)
            "method": method,
            "params": orjson.loads(params),
            "ts": ts,
            "nonce": b64encode(nonce).decode("ascii"),
            "sig": b64encode(signature).decode("ascii"),
        }
    return change

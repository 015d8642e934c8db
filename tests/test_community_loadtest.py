"""The community load test (``loadtest/community_locustfile.py``) runs clean against a real server.

A short form of ``bench/community_load.py``: a community server as a process of its own
(``veil community init`` on a free loopback port, in a temporary directory; four rooms, one of them
read-only, seeded with a few posts; ``veil community run``), then a headless Locust run of a few
seconds as a subprocess (so that gevent's monkey-patching stays out of this process): 2 Locust
users of 20 members each, polling every second (verifying every post's proof), a quarter of them
writing about every 2 s. It checks that the scenario ran, not how fast: Locust exits 0, requests
were made and none failed, every request type appeared, the members' polls saw the posts, and a
final poll by a fresh member finds exactly the posts Locust made, each with a proof that verifies.
The server's own count of answers has nothing but 200s. Skipped if ``locust`` is not installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from veil.protocol.community import verify_post

# Locust must not be imported here (it monkey-patches the process with gevent); it runs as a
# subprocess, and only its presence is checked.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import community_load as harness  # bench/community_load.py: the server and Locust runs

SEED_POSTS = 5
MEMBERS = 40
SETTINGS = {
    "VEIL_COMMUNITY_POLL_S": "1",
    "VEIL_COMMUNITY_WRITERS": "0.25",
    "VEIL_COMMUNITY_WRITE_S": "2",
    "VEIL_COMMUNITY_REACT_SHARE": "0.25",
    "VEIL_COMMUNITY_JOIN_SHARE": "0.5",  # half the members' first poll is a join (since null)
    "VEIL_COMMUNITY_VERIFY_SHARE": "1",  # every post's proof verified, as a reader does
}


def test_a_short_run_against_a_community_server_has_no_failures(tmp_path: Path) -> None:
    with harness.start_server(tmp_path, seed_posts=SEED_POSTS) as server:
        seeded = harness.room_seqnos(server)
        assert seeded == dict.fromkeys(server.rooms, SEED_POSTS)
        run = harness.run_locust(
            server,
            tmp_path,
            members=MEMBERS,
            members_per_user=20,
            duration_s=6,
            settings=SETTINGS,
            sample=False,
        )
        report = f"failures: {run.failures}\nstderr:\n{run.stderr[-6000:]}"
        final = harness.final_poll(server, seeded)
        code = server.stop()
        answers = server.answers()

    assert run.returncode == 0, report
    assert run.failed == 0, report
    assert run.requests > 0, report
    assert {"info", "rooms", "poll", "post"} <= set(run.stats), report
    assert len(run.summaries) == 1, report
    summary = run.summaries[0]
    assert summary["members"] == MEMBERS, report
    assert summary["writers"] == 10, report
    assert summary["polls"] > MEMBERS, report  # every member polled, more than once
    assert summary["posts"] > 0, report
    assert summary["posts_seen_by_others"] > 0, report  # the members' polls saw the posts
    assert summary["late_polls"] == 0, report
    assert summary["proofs_verified"] > 0, report  # the members' posts carry proofs that verify

    # a fresh member's poll from the seeded seqnos finds exactly the posts the members made
    made = [
        change
        for changes in final.values()
        for change in changes
        if not change.get("deleted") and change["name"].startswith("member-")
    ]
    assert len(made) == summary["posts"], report
    assert all(
        verify_post(server.server_key, room, c)
        for room in final
        for c in final[room]
        if not c.get("deleted") and c["name"].startswith("member-")
    ), report
    assert not final["news"], report  # the read-only room: no member may write there
    assert all(c["name"].startswith(("member-", "seed-")) for c in final["lobby"]), report

    assert code == 0, answers
    assert answers.get("poll 200", 0) >= summary["polls"], answers
    assert answers.get("post 200", 0) == summary["posts"], answers
    assert all(key.endswith(" 200") for key in answers), answers

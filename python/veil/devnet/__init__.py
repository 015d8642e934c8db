"""``veil devnet``: a local network of Veil nodes for development and tests.

::

    veil devnet up [--nodes N] [--dir DIR] [--detach] [--timeout S] [--interval S]
    veil devnet status [--dir DIR] [--json]
    veil devnet down [--dir DIR]

``up`` starts N (default 12) ``veil node run`` processes on 127.0.0.1, each with its own data
directory and LMDB store under DIR, nodes 0 and 1 being the seeds of all the others
(:mod:`veil.devnet.network`). It waits (``--timeout``, default 30 s) until every node answers and
every node's ``get_nodes`` lists all N, and fails with exit code 1 otherwise. Then, in the
foreground, it shows a live view (:mod:`veil.devnet.view`) until Ctrl-C, SIGTERM or SIGHUP, which
stop the nodes (SIGTERM, SIGKILL after 10 s) and exit 0; with ``--detach`` it prints one line with
the seeds and returns, leaving the nodes running.

``status`` reads ``DIR/devnet.json`` (:mod:`veil.devnet.state`), asks each node ``info`` (1 s
timeout) and prints a table, or with ``--json`` one object for scripts::

    {"dir": ..., "running": 4, "swarm_size": 5, "min_swarm_size": 3, "seeds": ["127.0.0.1:P", ...],
     "supervisor": PID | null,
     "nodes": [{"index", "http", "link", "ed25519", "x25519", "pid", "running", "view",
                "data_dir"}, ...]}

(``view``: how many nodes that node knows; ``running``: it answered ``info`` with its own key.)

``down`` stops every recorded process that is still that node (pid, start time and command line
checked, so a reused pid is never signalled) and the foreground ``up`` supervising them, if any.

DIR defaults to ``.devnet`` in the current directory: a devnet belongs to the checkout or project
it is started from, and is easy to find and delete (``rm -r .devnet``). A DIR that is not empty
and holds no devnet is refused. ``up`` in a DIR whose devnet is stopped restarts it with the same
node keys and stores (new ports); ``up`` while it runs fails with exit code 1.
"""

from __future__ import annotations

from veil.devnet.cli import add_devnet_commands

__all__ = ["add_devnet_commands"]

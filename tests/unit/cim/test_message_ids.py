"""MessageIDs amihub makes: random version-4 UUIDs, none repeated, not even across a fork."""

from __future__ import annotations

import os
import threading
import uuid

from cim_schemas.envelope import new_message_id


def test_message_ids_are_random_version_4_uuids_never_repeated() -> None:
    ids = [new_message_id() for _ in range(2000)]  # several draws of the pool
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert {u.version for u in parsed} == {4}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    assert all(str(u) == i for u, i in zip(parsed, ids, strict=True))


def test_threads_draw_their_own_ids() -> None:
    got: list[list[str]] = [[], []]

    def draw(into: list[str]) -> None:
        into.extend(new_message_id() for _ in range(300))

    threads = [threading.Thread(target=draw, args=(g,)) for g in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got[0]) | set(got[1])) == 600


def test_a_forked_child_does_not_reuse_the_parents_ids() -> None:
    new_message_id()  # the parent holds a pool of ids not yet handed out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.close(read)
        os.write(write, "\n".join(new_message_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {new_message_id() for _ in range(5)}
    assert len(child) == 5
    assert not child & parent

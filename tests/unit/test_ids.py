import uuid

from mailgate.ids import _next_after, new_id


def test_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert all(str(uuid.UUID(i)) == i for i in ids)  # the canonical lower-case 8-4-4-4-12


def test_increment_carries_into_rand_a_and_keeps_version_bits() -> None:
    value = uuid.UUID("01a1ffa5-4432-7fff-bfff-ffffffffffff").int
    following = uuid.UUID(int=_next_after(value))
    assert str(following) == "01a1ffa5-4433-7000-8000-000000000000"
    assert following.version == 7


def test_a_forked_child_does_not_repeat_its_parents_random_bits() -> None:
    """Random bits are read ahead in blocks; a child must not reuse the parent's block."""
    import os

    new_id()  # the parent has bytes read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child, parent = os.read(read, 64).decode(), new_id()
    assert child[15:] != parent[15:]  # the random part (after the time and version)

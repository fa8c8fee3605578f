"""/dev/shm/NAME opened by path is the segment shm_open("/NAME") opens (issue 9).

    devshm.py NAME creator   SharedMemory(create=True) (shm_open), writes, waits for the reply
    devshm.py NAME path      os.open("/dev/shm/NAME") + mmap on another node: reads, replies
"""
import mmap
import os
import sys
import time
from multiprocessing import shared_memory

name, role = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 60


def wait(cond, what):
    while not cond():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.002)


if role == "creator":
    shm = shared_memory.SharedMemory(name=name, create=True, size=4096)
    shm.buf[100:105] = b"hello"
    shm.buf[0] = 1
    wait(lambda: shm.buf[1] == 1, "the reply through /dev/shm")
    assert bytes(shm.buf[200:205]) == b"world", bytes(shm.buf[200:205])
    # The same path on this node is the same object too, also through stdio's fopen path.
    with open(f"/dev/shm/{name}", "r+b") as f:
        m = mmap.mmap(f.fileno(), 4096)
        assert m[100:105] == b"hello" and m[200:205] == b"world", m[:300]
    shm.close()
    os.unlink(f"/dev/shm/{name}")  # unlink by path removes the name, as shm_unlink does
    try:
        shared_memory.SharedMemory(name=name)
        sys.exit("the name survived unlink by path")
    except FileNotFoundError:
        pass
    print("creator ok")
else:
    deadline_open = time.monotonic() + 30
    while True:
        try:
            fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
            break
        except FileNotFoundError:
            if time.monotonic() > deadline_open:
                raise
            time.sleep(0.005)
    # Created by shm_open, then sized by ftruncate: a path opened between the two sees the
    # object empty, as on one host; the size follows.
    wait(lambda: os.fstat(fd).st_size == 4096, "the creator's ftruncate")
    m = mmap.mmap(fd, 4096)
    wait(lambda: m[0] == 1, "the creator's flag")
    assert m[100:105] == b"hello", m[100:105]
    m[200:205] = b"world"
    m[1] = 1
    print("path ok")

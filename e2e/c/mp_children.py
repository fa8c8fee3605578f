"""Python programs sharing memory with their children, knowing nothing of dsm: a
multiprocessing.Process (fork) writes into the parent's SharedMemory, and a child started with
subprocess (posix_spawn, then exec) attaches by name and writes too.

usage: mp_children.py NAME CHECKER
"""
import multiprocessing as mp
import subprocess
import sys
from multiprocessing import shared_memory


def child(name):
    shm = shared_memory.SharedMemory(name=name)
    shm.buf[4096:4096 + 5] = b"child"
    shm.close()


def forked(buf_name):
    # Inherited mapping, no attach: the forked child writes through the parent's mapping.
    shm = shared_memory.SharedMemory(name=buf_name)
    shm.buf[8192:8192 + 6] = b"forked"
    shm.close()


if __name__ == "__main__":
    name, checker = sys.argv[1], sys.argv[2]
    mp.set_start_method("fork")
    shm = shared_memory.SharedMemory(name=name, create=True, size=4 * 4096)
    shm.buf[:6] = b"parent"
    p = mp.Process(target=forked, args=(shm.name,))
    p.start()
    p.join()
    q = mp.Process(target=child, args=(shm.name,))
    q.start()
    q.join()
    # A separate program, spawned and exec'd, attaches by name and reads what all three wrote.
    out = subprocess.run([sys.executable, checker, shm.name], capture_output=True, text=True)
    print("spawned:", out.stdout.strip(), out.stderr.strip())
    ok = bytes(shm.buf[:6]) == b"parent" and bytes(shm.buf[4096:4101]) == b"child" \
        and bytes(shm.buf[8192:8198]) == b"forked" and out.stdout.strip() == "parent child forked"
    print("exit codes", p.exitcode, q.exitcode, "ok" if ok else "WRONG")
    shm.close()
    shm.unlink()
    sys.exit(0 if ok and p.exitcode == 0 and q.exitcode == 0 else 1)

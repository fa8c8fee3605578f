"""multiprocessing.shared_memory as Python programs use it, knowing nothing of dsm.

usage: shared_memory.py create NAME | attach NAME
"""
import sys
from multiprocessing import shared_memory

mode, name = sys.argv[1], sys.argv[2]
if mode == "create":
    shm = shared_memory.SharedMemory(name=name, create=True, size=3 * 4096 + 5)
    shm.buf[:5] = b"hello"
    shm.buf[3 * 4096 : 3 * 4096 + 5] = b"world"
    print("created", shm.name, shm.size)
    shm.close()
    # Leave it for the attacher; keep the resource tracker from removing it at exit.
    from multiprocessing import resource_tracker
    resource_tracker.unregister(shm._name, "shared_memory")
else:
    shm = shared_memory.SharedMemory(name=name)
    data = bytes(shm.buf[:5]) + bytes(shm.buf[3 * 4096 : 3 * 4096 + 5])
    print("attached", shm.size, data.decode())
    shm.close()
    shm.unlink()
    sys.exit(0 if data == b"helloworld" and shm.size >= 3 * 4096 + 5 else 1)

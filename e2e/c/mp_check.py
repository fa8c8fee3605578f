"""Attaches to a SharedMemory by name and prints what mp_children.py's processes wrote."""
import sys
from multiprocessing import resource_tracker, shared_memory

shm = shared_memory.SharedMemory(name=sys.argv[1])
print(bytes(shm.buf[:6]).decode(), bytes(shm.buf[4096:4101]).decode(), bytes(shm.buf[8192:8198]).decode())
shm.close()
resource_tracker.unregister(shm._name, "shared_memory")

# multiprocessing.Lock (a named POSIX semaphore, distributed by the shim) guarding a counter in
# multiprocessing.shared_memory, under the fork and spawn start methods. Knows nothing of dsm.
# usage: mp_lock.py fork|spawn ROUNDS
import multiprocessing as mp
import sys
from multiprocessing import shared_memory

def work(name, lock, n):
    shm = shared_memory.SharedMemory(name=name)
    for _ in range(n):
        with lock:
            v = int.from_bytes(shm.buf[:8], "little")
            shm.buf[:8] = (v + 1).to_bytes(8, "little")
    shm.close()

if __name__ == "__main__":
    method, n = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context(method)
    shm = shared_memory.SharedMemory(create=True, size=4096)
    lock = ctx.Lock()
    ps = [ctx.Process(target=work, args=(shm.name, lock, n)) for _ in range(4)]
    for p in ps: p.start()
    for p in ps: p.join()
    total = int.from_bytes(shm.buf[:8], "little")
    print(f"{method}: counter {total} (want {4 * n})")
    shm.close(); shm.unlink()
    sys.exit(0 if total == 4 * n else 1)

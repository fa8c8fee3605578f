// Boost.Interprocess synchronization as C++ programs use it: an interprocess_mutex and two
// interprocess_conditions guarding a bounded queue in a managed shared memory segment. Role 0
// produces ITEMS numbers, the other roles consume them; every number is taken once.
// Knows nothing of dsm. usage: boost_queue NAME ROLE NPROCS ITEMS
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/sync/interprocess_condition.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace bip = boost::interprocess;

struct Queue {
    bip::interprocess_mutex mutex;
    bip::interprocess_condition not_empty, not_full;
    long ring[16];
    long head = 0, tail = 0;
    long sum = 0, taken = 0, finished = 0;
};

int main(int argc, char **argv) {
    const char *name = argv[1];
    int role = std::atoi(argv[2]), nprocs = std::atoi(argv[3]);
    long items = std::atol(argv[4]);
    Queue *q = nullptr;
    bip::managed_shared_memory *segment = nullptr;
    if (role == 0) {
        segment = new bip::managed_shared_memory(bip::create_only, name, 1 << 16);
        q = segment->construct<Queue>("queue")();
    } else {
        for (int i = 0; i < 2000 && !q; i++) {
            try {
                segment = new bip::managed_shared_memory(bip::open_only, name);
                q = segment->find<Queue>("queue").first;
            } catch (const bip::interprocess_exception &) {
            }
            if (!q) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (!q) { std::printf("queue never appeared\n"); return 1; }
    }
    if (role == 0) {
        for (long i = 1; i <= items + nprocs - 1; i++) {
            bip::scoped_lock<bip::interprocess_mutex> lock(q->mutex);
            while (q->tail - q->head == 16) q->not_full.wait(lock);
            q->ring[q->tail++ % 16] = i <= items ? i : 0;  // 0: stop
            q->not_empty.notify_one();
        }
        bip::scoped_lock<bip::interprocess_mutex> lock(q->mutex);
        while (q->finished != nprocs - 1) q->not_full.wait(lock);
        long want = items * (items + 1) / 2;
        std::printf("consumers took %ld items summing to %ld (want %ld items, %ld)\n", q->taken, q->sum,
                    items, want);
        bool ok = q->taken == items && q->sum == want;
        lock.unlock();
        bip::shared_memory_object::remove(name);
        return ok ? 0 : 1;
    }
    for (;;) {
        bip::scoped_lock<bip::interprocess_mutex> lock(q->mutex);
        while (q->tail == q->head) q->not_empty.wait(lock);
        long v = q->ring[q->head++ % 16];
        q->not_full.notify_all();
        if (v == 0) { q->finished++; break; }
        q->sum += v;
        q->taken++;
    }
    std::printf("role %d done\n", role);
    return 0;
}

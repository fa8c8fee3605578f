/* dsm.h — the explicit API of libdsm.so, for programs written for distributed shared memory.
 *
 * Two ways to use it:
 * The build installs this header next to libdsm.so (target/release/dsm.h).
 *   1. Link against the library:   cc prog.c -I target/release -L target/release -ldsm
 *      and run with LD_LIBRARY_PATH (or an rpath) pointing at libdsm.so. Linked first, the
 *      library interposes shm_open, mmap and the pthread functions without LD_PRELOAD.
 *   2. Build without it and run under LD_PRELOAD=libdsm.so: compile with -DDSM_WEAK, and the
 *      functions below are weak references; DSM_AVAILABLE() tells at run time whether the
 *      library is there (all of them are NULL when it is not).
 *
 * Functions returning int give 0 (or the documented value) on success and -1 with errno set on
 * failure; ENOTRECOVERABLE means the node keeping the lock or barrier is gone.
 */
#ifndef DSM_H
#define DSM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef DSM_WEAK
#define DSM_API __attribute__((weak))
#else
#define DSM_API
#endif

/* This node's id (the dsmd --node-id). */
DSM_API int dsm_node_id(void);

/* Nodes in the cluster (configured members, this one included). */
DSM_API int dsm_node_count(void);

/* Waits until `count` callers across the cluster have reached the barrier called `name`.
 * Returns 1 in exactly one caller per round (the serial one), 0 in the others. */
DSM_API int dsm_barrier(const char *name, unsigned count);

/* Cluster-wide lock number `id`: FIFO among waiters, no spinning over the network. */
DSM_API int dsm_lock(unsigned long id);
DSM_API int dsm_unlock(unsigned long id);

/* `size` bytes, 16-byte aligned, from the shared heap of the DSM segment mapped at `segment`
 * (its base address): every node gets the same address for the same allocation. The heap is
 * the mapped segment itself, from its start; there is no free. NULL (errno ENOMEM) when full. */
DSM_API void *dsm_alloc(void *segment, size_t size);

/* This node's running totals: what a program can report as its cost. */
struct dsm_counters {
    uint64_t faults;            /* page faults dsmd served (not those served in-process) */
    uint64_t messages_sent;     /* messages to peers */
    uint64_t messages_received; /* messages from peers */
    uint64_t sync_requests;     /* lock, condition, barrier and allocation requests */
};
DSM_API int dsm_counters(struct dsm_counters *out);

#ifdef DSM_WEAK
#define DSM_AVAILABLE() (dsm_node_id != 0)
#else
#define DSM_AVAILABLE() 1
#endif

#ifdef __cplusplus
}
#endif

#endif /* DSM_H */

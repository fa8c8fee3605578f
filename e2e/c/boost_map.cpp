// Boost.Interprocess as C++ programs use it: a managed shared memory segment holding a map,
// built by one process and read by another. Knows nothing of dsm.
// usage: boost_map NAME create|check ENTRIES
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

namespace bip = boost::interprocess;
using Value = std::pair<const int, long>;
using Alloc = bip::allocator<Value, bip::managed_shared_memory::segment_manager>;
using Map = bip::map<int, long, std::less<int>, Alloc>;

int main(int argc, char **argv) {
    const char *name = argv[1];
    int entries = std::atoi(argv[3]);
    if (std::strcmp(argv[2], "create") == 0) {
        bip::shared_memory_object::remove(name);
        bip::managed_shared_memory segment(bip::create_only, name, 1 << 20);
        Map *map = segment.construct<Map>("squares")(segment.get_segment_manager());
        for (int i = 0; i < entries; i++) map->emplace(i, long(i) * i);
        segment.construct<int>("entries")(entries);
        std::printf("created %zu entries\n", map->size());
        return 0;
    }
    bip::managed_shared_memory segment(bip::open_only, name);
    Map *map = segment.find<Map>("squares").first;
    int *count = segment.find<int>("entries").first;
    int bad = 0;
    if (!map || !count || int(map->size()) != *count) bad++;
    for (int i = 0; map && i < entries; i++) {
        auto it = map->find(i);
        if (it == map->end() || it->second != long(i) * i) bad++;
    }
    std::printf("checked %zu entries, %d bad\n", map ? map->size() : 0, bad);
    bip::shared_memory_object::remove(name);
    return bad != 0;
}

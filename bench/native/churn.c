/* Allocation-heavy and deterministic, for the native profiler benchmark: ROUNDS rounds, each
 * holding BLOCKS blocks of 64..1024 bytes (jemalloc size classes, so requested == allocated)
 * and then freeing them; the middle round also holds a 64 MiB buffer while its blocks are
 * live. It counts its own live bytes and prints the heap peak they reached. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUNDS 100
#define BLOCKS 40000
#define BIG ((size_t)64 << 20)

static const size_t SIZES[] = {64, 128, 256, 512, 1024};
static size_t live, peak;

static void *take(size_t n) {
    char *p = malloc(n);
    if (!p) exit(2);
    memset(p, 1, n < 64 ? n : 64);
    live += n;
    if (live > peak) peak = live;
    return p;
}

static void give(void *p, size_t n) {
    free(p);
    live -= n;
}

static void *blocks[BLOCKS];
static size_t sizes[BLOCKS];

static void hold_blocks(int round) {
    for (int i = 0; i < BLOCKS; i++) {
        sizes[i] = SIZES[(i * 7 + round) % 5];
        blocks[i] = take(sizes[i]);
    }
}

static char *hold_big(void) {
    char *p = take(BIG);
    memset(p, 2, BIG);
    return p;
}

int main(void) {
    for (int r = 0; r < ROUNDS; r++) {
        hold_blocks(r);
        char *big = r == ROUNDS / 2 ? hold_big() : NULL;
        for (int i = 0; i < BLOCKS; i++) give(blocks[i], sizes[i]);
        if (big) give(big, BIG);
    }
    printf("heap_peak_bytes=%zu\n", peak);
    return 0;
}

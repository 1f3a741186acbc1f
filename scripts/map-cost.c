/* The kernel's cost of mapping a file that is already in the page cache: map it, touch one
 * byte of every 4 KiB page, unmap it; prints both times and the page faults taken. Mode 1
 * maps at a 2 MiB-aligned address, mode 2 also asks for MADV_HUGEPAGE. Mode 3 copies the
 * file instead, with pread into one 256 KiB buffer (what a read path without mappings costs).
 *   cc -O2 scripts/map-cost.c -o /tmp/map-cost && /tmp/map-cost /tmp/w4/p.npy 0 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s FILE MODE(0|1|2|3)\n", argv[0]);
    return 2;
  }
  int fd = open(argv[1], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
    perror(argv[1]);
    return 1;
  }
  size_t n = st.st_size, huge = 2 << 20;
  int mode = atoi(argv[2]);
  if (mode == 3) {
    size_t chunk = 256 << 10;
    char *buf = aligned_alloc(4096, chunk);
    volatile unsigned long sum = 0;
    double t0 = now();
    for (size_t off = 0; off < n;) {
      ssize_t r = pread(fd, buf, chunk, off);
      if (r <= 0) {
        perror("pread");
        return 1;
      }
      sum += buf[0];
      off += r;
    }
    double t1 = now();
    printf("mode 3: pread %.1f ms (%.1f GB/s)\n", (t1 - t0) * 1e3, n / (t1 - t0) / 1e9);
    return 0;
  }
  char *p;
  if (mode == 0) {
    p = mmap(0, n, PROT_READ, MAP_SHARED, fd, 0);
  } else {
    char *r = mmap(0, n + huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    char *a = (char *)(((uintptr_t)r + huge - 1) & ~(uintptr_t)(huge - 1));
    p = mmap(a, n, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
    if (mode == 2 && madvise(p, n, MADV_HUGEPAGE) != 0)
      perror("madvise");
  }
  if (p == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  struct rusage u0, u1;
  getrusage(RUSAGE_SELF, &u0);
  double t0 = now();
  volatile unsigned long sum = 0;
  for (size_t i = 0; i < n; i += 4096)
    sum += p[i];
  double t1 = now();
  getrusage(RUSAGE_SELF, &u1);
  munmap(p, n);
  double t2 = now();
  printf("mode %d: map (touch) %.1f ms, unmap %.1f ms, %ld page faults\n", mode,
         (t1 - t0) * 1e3, (t2 - t1) * 1e3, u1.ru_minflt - u0.ru_minflt);
  return 0;
}

/* How many CPUs this process may really use: the affinity mask, further
 * capped by a cgroup v2 CPU quota (containers, systemd CPUQuota=), so that
 * default worker counts follow the container's limit and not the host's. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "segd/engine.h"

int segd_cpu_count(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n < 1) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c < 1 ? 1 : (int)c;
    }
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char quota[32];
        long period = 0;
        if (fscanf(f, "%31s %ld", quota, &period) == 2 && period > 0 && quota[0] != 'm') {
            long q = atol(quota);
            int lim = (int)((q + period - 1) / period);
            if (lim >= 1 && lim < n)
                n = lim;
        }
        fclose(f);
    }
    return n;
}

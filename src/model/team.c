/* Fork-join team: helpers spin briefly for the next job (a forward pass
 * issues dozens back to back), then sleep on a condition variable. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "model/team.h"

#define SPIN_ITERS 4000 /* ~100 us of pause: enough between back-to-back convs */

struct segd_team {
    int n;                   /* threads including the caller */
    pthread_t *threads;      /* n - 1 helpers */
    int started;             /* helpers successfully created */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_uint gen;         /* bumped for every job */
    atomic_int next;         /* next task index */
    atomic_int busy;         /* helpers still in the current job */
    int ntasks;
    segd_task_fn fn;
    void *ctx;
    int quit;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void work(segd_team *t, int thread)
{
    int i;
    while ((i = atomic_fetch_add(&t->next, 1)) < t->ntasks)
        t->fn(t->ctx, i, thread);
}

typedef struct helper_arg {
    segd_team *t;
    int id;
} helper_arg;

static void *helper(void *p)
{
    segd_team *t = ((helper_arg *)p)->t;
    int id = ((helper_arg *)p)->id;
    free(p);
    unsigned seen = 0; /* gen starts at 0: a job posted before this thread runs is not missed */
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&t->gen, memory_order_acquire) == seen && ++spins < SPIN_ITERS)
            cpu_relax();
        if (atomic_load_explicit(&t->gen, memory_order_acquire) == seen) {
            pthread_mutex_lock(&t->mu);
            while (atomic_load(&t->gen) == seen && !t->quit)
                pthread_cond_wait(&t->wake, &t->mu);
            pthread_mutex_unlock(&t->mu);
        }
        if (t->quit)
            return NULL;
        seen = atomic_load(&t->gen);
        work(t, id);
        if (atomic_fetch_sub(&t->busy, 1) == 1) {
            pthread_mutex_lock(&t->mu);
            pthread_cond_signal(&t->done);
            pthread_mutex_unlock(&t->mu);
        }
    }
}

int segd_team_create(int nthreads, segd_team **out)
{
    *out = NULL;
    if (nthreads < 1 || nthreads > 256)
        return -EINVAL;
    segd_team *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->n = nthreads;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->wake, NULL);
    pthread_cond_init(&t->done, NULL);
    int rc = 0;
    if (nthreads > 1) {
        t->threads = calloc((size_t)nthreads - 1, sizeof *t->threads);
        if (!t->threads) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    for (int i = 1; i < nthreads; i++) {
        helper_arg *a = malloc(sizeof *a);
        if (!a) {
            rc = -ENOMEM;
            goto fail;
        }
        *a = (helper_arg){t, i};
        int e = pthread_create(&t->threads[i - 1], NULL, helper, a);
        if (e) {
            free(a);
            rc = -e;
            goto fail;
        }
        t->started++;
    }
    *out = t;
    return 0;
fail:
    segd_team_free(t);
    return rc;
}

void segd_team_free(segd_team *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->quit = 1;
    atomic_fetch_add(&t->gen, 1);
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < t->started; i++)
        pthread_join(t->threads[i], NULL);
    pthread_cond_destroy(&t->wake);
    pthread_cond_destroy(&t->done);
    pthread_mutex_destroy(&t->mu);
    free(t->threads);
    free(t);
}

int segd_team_size(const segd_team *t)
{
    return t ? t->n : 1;
}

void segd_team_run(segd_team *t, int ntasks, segd_task_fn fn, void *ctx)
{
    if (!t || t->n == 1 || ntasks <= 1) {
        for (int i = 0; i < ntasks; i++)
            fn(ctx, i, 0);
        return;
    }
    t->fn = fn;
    t->ctx = ctx;
    t->ntasks = ntasks;
    atomic_store(&t->next, 0);
    atomic_store(&t->busy, t->n - 1);
    pthread_mutex_lock(&t->mu);
    atomic_fetch_add_explicit(&t->gen, 1, memory_order_release);
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->mu);
    work(t, 0);
    int spins = 0;
    while (atomic_load_explicit(&t->busy, memory_order_acquire) > 0 && ++spins < SPIN_ITERS)
        cpu_relax();
    if (atomic_load(&t->busy) > 0) {
        pthread_mutex_lock(&t->mu);
        while (atomic_load(&t->busy) > 0)
            pthread_cond_wait(&t->done, &t->mu);
        pthread_mutex_unlock(&t->mu);
    }
}

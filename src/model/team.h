/* A fork-join team of threads owned by one worker: segd_team_run() hands
 * tasks 0..n-1 to the calling thread and the team's helpers and returns when
 * all are done.  Not shared between workers. */
#ifndef SEGD_MODEL_TEAM_H
#define SEGD_MODEL_TEAM_H

typedef struct segd_team segd_team;

/* task: index in [0, ntasks); thread: in [0, segd_team_size()) (0 = caller). */
typedef void (*segd_task_fn)(void *ctx, int task, int thread);

/* nthreads >= 1 (1: no helper threads).  0, -EINVAL, -ENOMEM or -errno of
 * pthread_create; *out NULL on error. */
int segd_team_create(int nthreads, segd_team **out);
void segd_team_free(segd_team *t); /* NULL is fine; joins the helpers */
int segd_team_size(const segd_team *t);
/* Run fn on every task and wait.  t may be NULL (runs inline).  Cannot fail. */
void segd_team_run(segd_team *t, int ntasks, segd_task_fn fn, void *ctx);

#endif

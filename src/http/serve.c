/* `segd serve`: parse the configuration, load the weights (fail fast),
 * start the server, then wait for SIGTERM/SIGINT with sigtimedwait() on the
 * main thread (the signals are blocked in every thread, so no handler runs
 * async-signal-unsafe code) and drain. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "segd/cli.h"
#include "segd/config.h"
#include "segd/engine.h"
#include "segd/metrics.h"
#include "segd/queue.h"
#include "segd/server.h"

#ifndef SEGD_VERSION
#define SEGD_VERSION "unknown"
#endif

extern char **environ;

static int write_port_file(const char *path, int port)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -errno;
    int bad = fprintf(f, "%d\n", port) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) /* readers never see a half-written file */
        return -EIO;
    return 0;
}

/* Wait up to `seconds` for a signal of set.  1 when one arrived. */
static int wait_signal(const sigset_t *set, double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    for (;;) {
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig > 0)
            return 1;
        if (errno == EAGAIN)
            return 0;
        /* EINTR: another signal; wait again (the timeout restarts: fine) */
    }
}

int segd_cli_serve(int argc, char **argv)
{
    segd_config cfg;
    char err[512] = "";
    segd_config_defaults(&cfg);
    if (segd_config_parse(&cfg, argc, argv, environ, err, sizeof err)) {
        fprintf(stderr, "segd serve: %s (see segd serve --help)\n", err);
        return 2;
    }
    if (cfg.help) {
        segd_config_usage(stdout);
        return 0;
    }
    if (!cfg.weights[0] && segd_cli_default_weights(cfg.weights, sizeof cfg.weights)) {
        fprintf(stderr, "segd serve: no weights file found (give --weights FILE or SEGD_WEIGHTS)\n");
        return 1;
    }

    /* Block the drain signals before any thread exists so that every
     * thread inherits the mask and only sigtimedwait() below sees them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    segd_model *model = NULL;
    segd_metrics *metrics = NULL;
    segd_server *server = NULL;

    if (segd_model_load(cfg.weights, &model, err, sizeof err)) {
        fprintf(stderr, "segd serve: cannot load weights '%s': %s\n", cfg.weights, err);
        goto out;
    }
    if (!segd_model_data_verified(model))
        fprintf(stderr, "segd serve: warning: weights '%s' carry no tensor_sha256 (exported before "
                        "it existed): tensor data not verified\n", cfg.weights);
    if (segd_model_set_gemm(model, cfg.gemm)) { /* the name was validated by the config */
        fprintf(stderr, "segd serve: out of memory for the '%s' GEMM backend\n", cfg.gemm);
        goto out;
    }
    if (segd_metrics_create(SEGD_VERSION, segd_model_name(model), segd_model_sha256(model),
                            segd_model_width(model), &metrics)) {
        fprintf(stderr, "segd serve: out of memory\n");
        goto out;
    }
    if (segd_server_create(&cfg, model, metrics, &server, err, sizeof err)) {
        fprintf(stderr, "segd serve: %s\n", err);
        goto out;
    }
    int port = segd_server_port(server);
    const char *host = cfg.bind;
    int v6 = strchr(host, ':') != NULL;
    fprintf(stderr, "segd: model %s (%s), %d workers x %d threads (GEMM %s, BLAS %d), "
            "queue %d, max body %zu, max pixels %zu\n", segd_model_name(model), cfg.weights,
            cfg.workers, cfg.worker_threads, segd_model_gemm(model), segd_gemm_blas_threads(),
            cfg.queue_depth, cfg.max_body, cfg.max_pixels);
    fprintf(stderr, "segd: listening on http://%s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "", port);
    if (cfg.port_file[0]) {
        int rc = write_port_file(cfg.port_file, port);
        if (rc) {
            fprintf(stderr, "segd serve: cannot write --port-file '%s': %s\n", cfg.port_file,
                    strerror(-rc));
            goto out;
        }
    }

    while (!wait_signal(&sigs, 3600.0))
        ;
    double t0 = segd_queue_now();
    segd_server_drain(server);
    fprintf(stderr, "segd: draining (%ld accepted jobs unanswered, up to %g s)\n",
            segd_server_jobs_active(server), cfg.drain_timeout);
    status = 0;
    for (;;) {
        long left = segd_server_jobs_active(server);
        if (left == 0)
            break;
        double remain = cfg.drain_timeout - (segd_queue_now() - t0);
        if (remain <= 0 || wait_signal(&sigs, remain < 0.02 ? remain : 0.02)) {
            if (remain > 0)
                fprintf(stderr, "segd: second signal, stopping now\n");
            size_t n = segd_server_cancel_queued(server);
            fprintf(stderr, "segd: drain incomplete: %ld jobs unanswered, %zu queued ones answered 503\n",
                    left, n);
            status = 1;
            break;
        }
    }
    if (status == 0)
        fprintf(stderr, "segd: drained in %.3f s\n", segd_queue_now() - t0);

out:
    segd_server_free(server);
    segd_metrics_free(metrics);
    segd_model_free(model);
    return status;
}

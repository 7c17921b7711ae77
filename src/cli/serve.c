/* `segd serve`: parse the configuration, load the weights (fail fast),
 * start the server, then wait for signals with sigtimedwait() on the main
 * thread (they are blocked in every thread, so no handler runs
 * async-signal-unsafe code) and drain.
 *
 * Signals: SIGTERM, SIGINT and SIGQUIT drain (a second one stops the
 * drain: queued jobs 503, running ones 503 at their next slice);
 * SIGHUP reloads the weights (and the API keys) from the same paths
 * without dropping a request (segd_server_reload; ignored while draining);
 * SIGUSR1 and SIGUSR2 are ignored (reserved); SIGPIPE is ignored.  Exit
 * status: 0 after a
 * complete drain, 1 when jobs were still unanswered at --drain-timeout (or
 * on a second signal) and on start-up errors, 2 on a usage error. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "segd/config.h"
#include "segd/engine.h"
#include "segd/log.h"
#include "segd/metrics.h"
#include "jobs/queue.h"
#include "segd/server.h"

#ifndef SEGD_VERSION
#define SEGD_VERSION "unknown"
#endif

#define LOG_FLUSH_S 2.0 /* at exit, for a slow log reader; the rest is dropped */

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

/* Wait up to `seconds` for a signal of set.  The signal, or 0. */
static int wait_signal(const sigset_t *set, double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    for (;;) {
        int sig = sigtimedwait(set, NULL, &ts);
        if (sig > 0)
            return sig;
        if (errno == EAGAIN)
            return 0;
        /* EINTR: another signal; wait again (the timeout restarts: fine) */
    }
}

/* Block SIGTERM, SIGINT and SIGQUIT (returned in *sigs, for
 * sigtimedwait()) and SIGHUP (waited for by the main loop only), and
 * ignore SIGPIPE, SIGUSR1 and SIGUSR2. */
static void block_signals(sigset_t *sigs)
{
    sigemptyset(sigs);
    sigaddset(sigs, SIGTERM);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGQUIT); /* a drain like SIGTERM, not a core dump dropping accepted jobs */
    sigset_t all = *sigs;
    sigaddset(&all, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* SIGUSR1/2 would kill the process (and every accepted job) by
     * default; they have no meaning yet, so they are ignored. */
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);
}

/* After the first drain signal: stop taking jobs and wait for the accepted
 * ones, up to drain_timeout seconds or a second signal.  The exit status:
 * 0 after a complete drain, 1 otherwise. */
static int drain(segd_server *server, segd_log *log, const sigset_t *sigs, double drain_timeout)
{
    double t0 = segd_queue_now();
    segd_server_drain(server);
    segd_log_printf(log, "segd: draining (%ld accepted jobs unanswered, up to %g s)",
                    segd_server_jobs_active(server), drain_timeout);
    int status = 0;
    for (;;) {
        long left = segd_server_jobs_active(server);
        if (left == 0)
            break;
        double remain = drain_timeout - (segd_queue_now() - t0);
        if (remain <= 0 || wait_signal(sigs, remain < 0.02 ? remain : 0.02)) {
            if (remain > 0)
                segd_log_printf(log, "segd: second signal, stopping now");
            size_t n = segd_server_cancel_queued(server);
            segd_log_printf(log, "segd: drain incomplete: %ld jobs unanswered, %zu queued ones "
                            "answered 503, running ones stop at their next slice (503); exit 1",
                            left, n);
            status = 1;
            break;
        }
    }
    if (status == 0)
        segd_log_printf(log, "segd: drained in %.3f s", segd_queue_now() - t0);
    return status;
}

/* The start-up lines: the model and the sizing, then where it listens. */
static void log_started(segd_log *log, const segd_config *cfg, const segd_model *model,
                        const segd_server *server)
{
    const char *host = cfg->bind;
    int v6 = strchr(host, ':') != NULL;
    segd_log_printf(log, "segd: model %s (%s), %d worker%s x %d thread%s (GEMM %s, %s), "
                    "batch %d, queue %d, max body %zu, bodies in memory %zu, "
                    "max pixels %zu",
                    segd_model_name(model), cfg->weights, cfg->workers,
                    cfg->workers == 1 ? "" : "s", cfg->worker_threads,
                    cfg->worker_threads == 1 ? "" : "s", segd_model_kernel(model),
                    segd_model_precision(model), cfg->batch, cfg->queue_depth,
                    cfg->max_body, cfg->max_body_total, cfg->max_pixels);
    if (segd_model_precision_note(model))
        segd_log_printf(log, "segd: precision %s", segd_model_precision_note(model));
    if (segd_server_probe_port(server) >= 0)
        segd_log_printf(log, "segd: probes on http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "",
                        segd_server_probe_port(server));
    segd_log_printf(log, "segd: listening on %s://%s%s%s:%d", cfg->tls_cert[0] ? "https" : "http",
                    v6 ? "[" : "", host, v6 ? "]" : "", segd_server_port(server));
}

/* What the server's loader needs: the weights path and the options. */
typedef struct reload_ctx {
    const segd_config *cfg;
    const segd_model_options *opts;
} reload_ctx;

/* segd_server_loader: --weights anew, with the start-up options. */
static int load_weights(void *ctx, segd_model **out, char *err, size_t errlen)
{
    const reload_ctx *c = ctx;
    return segd_model_load_opts(c->cfg->weights, c->opts, out, err, errlen);
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

#ifdef M_MMAP_THRESHOLD
    /* Buffers of 256 KiB and more (bodies, a series' decoded slices and
     * masks, answers) are mapped and unmapped with each request.  glibc
     * otherwise raises this threshold after the first large free, keeps
     * later ones in its heaps and the RSS stays at the high-water mark of
     * the largest series after it is answered. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
    /* Block the drain signals before any thread exists so that every
     * thread inherits the mask and only sigtimedwait() sees them. */
    sigset_t sigs;
    block_signals(&sigs);

    int status = 1;
    int wrote_port_file = 0;
    segd_model *model = NULL;
    segd_metrics *metrics = NULL;
    segd_server *server = NULL;
    segd_log *log = NULL;

    segd_model_options opts;
    /* cfg.gemm holds --gemm, else $SEGD_GEMM (both validated), else "auto";
     * cfg.precision likewise --precision, $SEGD_PRECISION, "fp32" */
    if (segd_cli_model_options(&opts, cfg.gemm, cfg.precision, err, sizeof err) ||
        segd_model_load_opts(cfg.weights, &opts, &model, err, sizeof err)) {
        fprintf(stderr, "segd serve: cannot load weights '%s': %s\n", cfg.weights, err);
        goto out;
    }
    if (!segd_model_data_verified(model))
        fprintf(stderr, "segd serve: warning: weights '%s' carry no tensor_sha256 (exported before "
                        "it existed): tensor data not verified\n", cfg.weights);
    if (segd_metrics_create(SEGD_VERSION, segd_model_name(model), segd_model_sha256(model),
                            segd_model_width(model), &metrics)) {
        fprintf(stderr, "segd serve: out of memory\n");
        goto out;
    }
    /* From here on every line goes through the log's own thread, so a
     * stalled reader of stderr cannot stall the daemon (segd/log.h). */
    if (segd_log_create(STDERR_FILENO, SEGD_LOG_DEFAULT_CAP, &log)) {
        fprintf(stderr, "segd serve: cannot start the log thread\n");
        goto out;
    }
    if (segd_server_create(&cfg, model, metrics, log, &server, err, sizeof err)) {
        fprintf(stderr, "segd serve: %s\n", err);
        goto out;
    }
    int port = segd_server_port(server);
    log_started(log, &cfg, model, server);
    if (cfg.port_file[0]) {
        int rc = write_port_file(cfg.port_file, port);
        if (rc) {
            segd_log_printf(log, "segd serve: cannot write --port-file '%s': %s", cfg.port_file,
                            strerror(-rc));
            goto out;
        }
        wrote_port_file = 1;
    }

    reload_ctx rctx = {&cfg, &opts};
    segd_server_set_loader(server, load_weights, &rctx);
    sigset_t main_sigs = sigs;
    sigaddset(&main_sigs, SIGHUP);
    for (;;) {
        int sig = wait_signal(&main_sigs, 3600.0);
        if (sig == SIGHUP) {
            char rerr[512];
            segd_log_printf(log, "segd: SIGHUP: reloading '%s'", cfg.weights);
            (void)segd_server_reload(server, rerr, sizeof rerr); /* logged by the server */
        } else if (sig) {
            break;
        }
    }
    status = drain(server, log, &sigs, cfg.drain_timeout);

out:
    /* like a pid file: once the socket is closed the port may be anyone's,
     * so a file left behind would send a reader to a stranger */
    segd_server_free(server);
    if (wrote_port_file)
        (void)unlink(cfg.port_file);
    segd_log_free(log, LOG_FLUSH_S);
    segd_metrics_free(metrics);
    segd_model_free(model);
    return status;
}

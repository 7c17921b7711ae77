/* Configuration of `segd serve`: every option as a flag and as a matching
 * SEGD_* environment variable (the flag wins), with the defaults listed by
 * --help.  Parsing is pure: it prints nothing and touches no global state. */
#ifndef SEGD_CONFIG_H
#define SEGD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#define SEGD_CONFIG_DEFAULT_PORT 8080
#define SEGD_CONFIG_DEFAULT_MAX_BODY (32u * 1024u * 1024u)
#define SEGD_CONFIG_DEFAULT_MAX_PARTS 16
#define SEGD_CONFIG_DEFAULT_MAX_SERIES_SLICES 512
/* POST /v1/series clean-up: see README "Series" for how it was chosen */
#define SEGD_CONFIG_DEFAULT_MIN_VOLUME_ML 4.0
#define SEGD_CONFIG_DEFAULT_REQUEST_TIMEOUT 30.0
#define SEGD_CONFIG_DEFAULT_DRAIN_TIMEOUT 30.0
#define SEGD_CONFIG_DEFAULT_CONN_TIMEOUT 30
#define SEGD_CONFIG_DEFAULT_MAX_CONNECTIONS 256
/* Queue slots per worker when --queue-depth is not given: an accepted job
 * then waits for at most two inferences ahead of it on its worker, and a
 * client beyond that learns at once (503 + Retry-After) instead of timing
 * out. */
#define SEGD_CONFIG_QUEUE_PER_WORKER 2
/* --max-body-total when not given: this share of the memory the process
 * is given (cgroup limit, else RAM), so that buffered uploads cannot push
 * a container past its limit; never under one --max-body. */
#define SEGD_CONFIG_BODY_MEMORY_SHARE 4

typedef struct segd_config {
    char bind[64];          /* --bind: IPv4 or IPv6 literal */
    int port;               /* --port: 0 = ephemeral */
    char port_file[4096];   /* --port-file: "" = none */
    char weights[4096];     /* --weights: "" = segd_cli_default_weights() */
    int workers;            /* --workers: inference threads */
    int worker_threads;     /* --worker-threads: engine team per worker */
    int batch;              /* --batch: series slices per forward pass */
    char gemm[16];          /* --gemm: native|openblas|auto (validated) */
    char precision[8];      /* --precision: fp32|bf16|auto (validated) */
    int queue_depth;        /* --queue-depth: jobs waiting, not running */
    int http_threads;       /* --http-threads: libmicrohttpd threads */
    double request_timeout; /* --request-timeout: seconds, deadline of a job */
    double drain_timeout;   /* --drain-timeout: seconds after SIGTERM */
    unsigned conn_timeout;  /* --connection-timeout: idle seconds */
    unsigned max_connections; /* --max-connections */
    size_t max_body;        /* --max-body: bytes */
    size_t max_body_total;  /* --max-body-total: bytes of all buffered bodies */
    size_t max_series_memory; /* --max-series-memory: bytes of running series' working memory */
    size_t memory_bytes;    /* memory this process is given (cgroup or RAM), for defaults */
    int probe_port;         /* --probe-port: -1 = off, 0 = ephemeral */
    size_t max_pixels;      /* --max-pixels: width * height */
    int max_parts;          /* --max-parts: multipart parts per request */
    int max_series_slices;  /* --max-series-slices: instances per POST /v1/series */
    double min_volume_ml;   /* --min-volume-ml: series 3D clean-up, mL; 0 = off */
    char api_key_file[4096]; /* --api-key-file: "" = no key needed */
    char tls_cert[4096];    /* --tls-cert: PEM file, "" = plain HTTP */
    char tls_key[4096];     /* --tls-key: PEM file */
    char cors_origin[512];  /* --cors-origin: "" = CORS off */
    int access_log;         /* --access-log on|off */
    int debug_job_delay_ms; /* --debug-job-delay: testing aid, 0 = off */
    int help;               /* --help was given */
} segd_config;

/* Fill cfg with the defaults (workers = online CPUs, queue depth derived
 * from it).  Cannot fail. */
void segd_config_defaults(segd_config *cfg);

/* Apply the SEGD_* variables of envp (NULL-terminated "NAME=value" list;
 * NULL means no environment), then the flags of argv (argv[0] is the
 * sub-command name and is skipped).  Returns 0, or -EINVAL with a one-line
 * message in err naming the flag or variable.  A queue depth left unset is
 * derived from the final worker count. */
int segd_config_parse(segd_config *cfg, int argc, char **argv, char **envp,
                      char *err, size_t errlen);

/* Print the usage text (every option, its variable and its default). */
void segd_config_usage(FILE *f);

#endif

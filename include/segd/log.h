/* Non-blocking line log: callers copy a line into a bounded ring buffer
 * and return at once; one writer thread of its own writes the ring to the
 * file descriptor.  When the reader of that descriptor stalls (stderr on
 * a pipe nobody reads), the ring fills and further lines are dropped and
 * counted instead of stalling the event loop or a worker. */
#ifndef SEGD_LOG_H
#define SEGD_LOG_H

#include <stddef.h>

typedef struct segd_log segd_log;

/* Default ring size: about 2,000 access-log lines. */
#define SEGD_LOG_DEFAULT_CAP (256u * 1024u)

/* Start a log writing to fd (borrowed, not closed) through a ring of cap
 * bytes.  0 or a negative errno (-ENOMEM, -EAGAIN: no thread). */
int segd_log_create(int fd, size_t cap, segd_log **out);

/* Queue one line (n bytes, a '\n' is added when missing).  Never blocks
 * on the descriptor: when the ring has no room the line is dropped and
 * counted.  Thread-safe.  NULL log: the line goes to stderr directly
 * (for code paths that run without a daemon, such as tests). */
void segd_log_line(segd_log *log, const char *line, size_t n);

/* printf-style segd_log_line (lines longer than 1 KiB are truncated). */
void segd_log_printf(segd_log *log, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Lines dropped so far because the ring was full.  Thread-safe. */
unsigned long long segd_log_dropped(segd_log *log);

/* Write out what is queued, waiting at most flush_s seconds for a slow
 * reader (what is left then is dropped), stop the writer thread and free
 * the log.  NULL is fine. */
void segd_log_free(segd_log *log, double flush_s);

#endif

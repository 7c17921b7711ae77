/* Sub-command entry points behind the thin src/main.c.  Each parses its own
 * arguments (argv[0] is the sub-command name) and returns a process exit
 * status. */
#ifndef SEGD_CLI_H
#define SEGD_CLI_H

/* segd infer [--weights FILE] [--threshold T] SLICE.png...  (src/model/infer_cli.c) */
int segd_cli_infer(int argc, char **argv);
/* segd serve [options]  (src/http/serve.c) */
int segd_cli_serve(int argc, char **argv);
/* Default weights file: $SEGD_WEIGHTS, else weights/ of the working
 * directory, else the installed data dir.  Writes into buf; 0 or -ENOENT. */
int segd_cli_default_weights(char *buf, unsigned long cap);

#endif

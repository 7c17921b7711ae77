/* The command line (src/cli, private to the segd executable and its tests):
 * the sub-command entry points behind the thin main.c, the default-weights
 * lookup and the SEGD_* variables of the engine.  Each entry point parses
 * its own arguments (argv[0] is the sub-command name) and returns a process
 * exit status.  Only this folder reads the environment. */
#ifndef SEGD_CLI_H
#define SEGD_CLI_H

#include "segd/engine.h"

/* Set by meson from its prefix and the default_weights option; the
 * fallbacks serve builds without meson (the fuzz build). */
#ifndef SEGD_DATADIR
#define SEGD_DATADIR "/usr/local/share/segd"
#endif
#ifndef SEGD_DEFAULT_WEIGHTS
#define SEGD_DEFAULT_WEIGHTS ""
#endif

/* segd infer [--weights FILE] [--threshold T] SLICE.png...  (infer.c) */
int segd_cli_infer(int argc, char **argv);
/* segd serve [options]  (serve.c) */
int segd_cli_serve(int argc, char **argv);
/* weights.c.  Default weights file: $SEGD_WEIGHTS, else (segd_cli_weights_in) weights/
 * of the working directory, else weights/ beside the executable's build
 * directory (<checkout>/build/segd -> <checkout>/weights), else the data
 * directory of meson's prefix (segd_cli_datadir()).  Writes into buf; 0 or
 * -ENOENT (none, or several candidates in the first directory that has any). */
int segd_cli_default_weights(char *buf, unsigned long cap);
/* The weights file of one directory: dir/name when name is non-empty and
 * that file exists, else the single dir/\*.safetensors.  Writes the path
 * into buf; 0, -ENOENT (none, or it does not fit cap) or -EEXIST (several:
 * ambiguous). */
int segd_cli_weights_in(const char *dir, const char *name, char *buf, unsigned long cap);
/* Installed data directory compiled in from meson's prefix and datadir
 * (e.g. /usr/local/share/segd).  Static string; cannot fail. */
const char *segd_cli_datadir(void);
/* env.c.  The model options of both sub-commands: gemm (a flag's value, already
 * validated) or else $SEGD_GEMM, precision (likewise) or else
 * $SEGD_PRECISION, $SEGD_NO_AVX2 (non-empty: portable kernels) and
 * $SEGD_NO_AVX512 (non-empty: AVX2 kernels at most).  The only place the
 * engine's environment is read.  0, or -EINVAL with err naming an invalid
 * $SEGD_GEMM or $SEGD_PRECISION. */
int segd_cli_model_options(segd_model_options *opts, const char *gemm, const char *precision,
                           char *err, unsigned long errlen);

#endif

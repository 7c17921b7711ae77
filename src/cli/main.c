/* segd: organ segmentation for MR-Linac gut radiotherapy.  Thin dispatcher
 * onto the sub-commands of src/cli. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *f)
{
    fputs("usage: segd <command> [options]\n"
          "\n"
          "commands:\n"
          "  serve    run the HTTP segmentation daemon (segd serve --help)\n"
          "  infer    segment PNG slices, one JSON document per line (segd infer --help)\n"
          "  version  print the version\n",
          f);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return segd_cli_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "infer") == 0)
        return segd_cli_infer(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        puts("segd " SEGD_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "segd: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}

#!/bin/sh
# run_node.sh CHECK.mjs [SEGD_EXE [WEIGHTS]]: run one node check of
# tests/viewer.  Installs the pinned npm packages (package-lock.json) into
# tests/viewer/node_modules when they are missing (set SEGD_NO_NPM=1 to
# skip instead).  Without node the check is SKIPPED (exit 77, meson's skip
# code); a failing `npm ci` is a FAILURE (exit 1), not a skip.
here=$(cd "$(dirname "$0")" && pwd)
check=$1
shift

skip() {
    echo "SKIP: $check: $*"
    echo "0 passed, 0 failed, 1 skipped"
    exit 77
}

command -v node >/dev/null 2>&1 || skip "node not found (apt-get install -y nodejs npm)"
if ! (cd "$here" && node -e "require.resolve('ajv'); require.resolve('ajv-formats'); require.resolve('playwright-core'); require.resolve('dcmjs'); require.resolve('@seriousme/openapi-schema-validator/package.json')") >/dev/null 2>&1; then
    [ -z "${SEGD_NO_NPM:-}" ] || skip "npm packages missing (npm ci in tests/viewer)"
    command -v npm >/dev/null 2>&1 || skip "npm not found and tests/viewer/node_modules missing"
    echo "run_node.sh: npm ci in tests/viewer" >&2
    if ! (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2); then
        echo "FAIL: $check: npm ci in tests/viewer failed"
        echo "0 passed, 1 failed, 0 skipped"
        exit 1
    fi
fi
exec node "$here/$check" "$@"

#!/bin/sh
# OpenAPI conformance of every route and error status: see openapi_check.mjs.
exec sh "$(dirname "$0")/run_node.sh" openapi_check.mjs "$@"

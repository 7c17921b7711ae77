#!/bin/sh
# The viewer in headless Chromium: see browser_check.mjs.
exec sh "$(dirname "$0")/run_node.sh" browser_check.mjs "$@"

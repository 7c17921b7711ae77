#!/bin/sh
# segd from the command line with curl: segment a slice (raw PNG body and
# multipart), show the model, and the main metrics.
#
#   examples/curl.sh [SLICE.png ...]
#   SEGD_URL=http://host:8080 examples/curl.sh scans/slice_0070_360_310_1.50_1.50.png
#   SEGD_API_KEY=$(cat segd.key) examples/curl.sh    (a server with --api-key-file)
#
# SEGD_API_KEY is sent as "Authorization: Bearer KEY"; curl reads that
# header from its standard input, so the key is on no command line (ps).
#
# stdout: the answers (one JSON document per line, then metric lines);
# stderr: what each step does.  Exits non-zero when a request fails
# (--fail-with-body still prints the error document).
set -eu

URL=${SEGD_URL:-http://127.0.0.1:8080}
KEY=${SEGD_API_KEY:-}
case $KEY in
*[!A-Za-z0-9._~+/=-]*)
    echo "curl.sh: SEGD_API_KEY is not an API key (letters, digits, -._~+/ and = padding)" >&2
    exit 2 ;;
esac
here=$(dirname "$0")
[ $# -gt 0 ] || set -- "$here/../tests/data/case110_day16_slice_0070_360_310_1.50_1.50.png"
first=$1
id=$(basename "$first" .png)

say() { printf '== %s\n' "$*" >&2; }
c() {
    if [ -n "$KEY" ]; then
        # printf is the shell's own: the key goes through a pipe, not an argv
        printf 'header = "Authorization: Bearer %s"\n' "$KEY" |
            curl --config - --silent --show-error --fail-with-body --max-time 120 "$@"
    else
        curl --silent --show-error --fail-with-body --max-time 120 "$@"
    fi
    echo
}

say "POST $URL/v1/segment?id=$id  (one raw PNG)"
c -H 'Content-Type: image/png' --data-binary "@$first" "$URL/v1/segment?id=$id"

say "POST $URL/v1/segment  (multipart/form-data, $# file part(s): ids from the file names)"
n=$#
for f in "$@"; do set -- "$@" -F "file=@$f;type=image/png"; done
shift "$n"
c "$@" "$URL/v1/segment"

say "GET $URL/v1/model"
c "$URL/v1/model"

say "GET $URL/metrics  (requests, jobs, inference time)"
curl --silent --show-error --fail --max-time 30 "$URL/metrics" |
    grep -E '^segd_(http_requests_total|jobs_[a-z_]+_total|inference_duration_seconds_(sum|count)|queue_depth|workers)[ {]' || true

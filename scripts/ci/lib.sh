# shellcheck shell=bash
# Helpers for .ci/run: steps, interpreters, venvs, test runs and the summary. Sourced by
# .ci/run and by the step files next to it; it only defines functions.
#
# A step is a shell function run in a subshell with `set -e`; its status and duration go into
# the summary and a failing step does not stop the others (CI shows every interpreter's
# counts), but any failure makes .ci/run exit 1. A background job (the 3.13t build) starts
# first and is waited for by the step that needs it, so it overlaps with the other steps.

CI_TMP=${CI_TMP:-$(mktemp -d "${TMPDIR:-/tmp}/livemod-ci.XXXXXX")}
CI_SUMMARY="$CI_TMP/summary.tsv"     # step, status, seconds
CI_COUNTS="$CI_TMP/counts.tsv"       # label, interpreter, passed, skipped, failed, errors, seconds
CI_FAILED=0
: >"$CI_SUMMARY"
: >"$CI_COUNTS"

ci_say() { printf '\n== %s\n' "$*"; }

# ci_selected NAME: true unless LIVEMOD_CI_ONLY (comma-separated step names) leaves it out.
ci_selected() {
    [[ -z "${LIVEMOD_CI_ONLY:-}" ]] && return 0
    [[ ",$LIVEMOD_CI_ONLY," == *",$1,"* ]]
}

# ci_step NAME FUNCTION [ARGS...]: run FUNCTION as the step NAME.
ci_step() {
    local name=$1 started rc
    shift
    ci_selected "$name" || return 0
    ci_say "$name"
    started=$(date +%s)
    set +e
    (set -euo pipefail; "$@")
    rc=$?
    set -e
    printf '%s\t%s\t%s\n' "$name" "$([[ $rc -eq 0 ]] && echo ok || echo "FAILED (exit $rc)")" \
        "$(($(date +%s) - started))" >>"$CI_SUMMARY"
    if [[ $rc -ne 0 ]]; then
        CI_FAILED=1
        echo "!! step $name failed (exit $rc)"
    fi
}

# ci_background NAME COMMAND...: start COMMAND now, output to $CI_TMP/NAME.log.
ci_background() {
    local name=$1
    shift
    echo "-- starting $name in the background (log: $CI_TMP/$name.log)"
    ("$@" >"$CI_TMP/$name.log" 2>&1; echo $? >"$CI_TMP/$name.rc") &
    echo $! >"$CI_TMP/$name.pid"
}

# ci_wait NAME [TIMEOUT]: wait (at most TIMEOUT seconds, default 3600) for a background job,
# print its log, fail if it failed. Polls the exit-status file: a step runs in a subshell,
# which cannot `wait` for a job its parent started.
ci_wait() {
    local name=$1 limit=${2:-3600} waited=0
    [[ -f "$CI_TMP/$name.pid" ]] || { echo "background job $name was not started"; return 1; }
    while [[ ! -f "$CI_TMP/$name.rc" ]]; do
        if ((waited >= limit)); then echo "background job $name still running after ${limit}s"; return 1; fi
        sleep 5
        waited=$((waited + 5))
    done
    cat "$CI_TMP/$name.log"
    [[ "$(cat "$CI_TMP/$name.rc")" == 0 ]]
}

# ci_python X.Y: the newest installed pyenv CPython X.Y (the pyenv shims may not resolve,
# so the versioned interpreters are called directly).
ci_python() {
    local root found
    root=$(pyenv root 2>/dev/null || true)
    [[ -d "$root/versions" ]] || root=/root/.pyenv
    found=$(find "$root/versions" -maxdepth 1 -name "$1.*" -printf '%f\n' 2>/dev/null |
        grep -E "^$1\.[0-9]+$" | sort -V | tail -1)
    [[ -n "$found" && -x "$root/versions/$found/bin/python3" ]] ||
        { echo "no CPython $1 under $root/versions" >&2; return 1; }
    echo "$root/versions/$found/bin/python3"
}

# ci_venv LABEL PYTHON SPEC [PIP-OPTIONS...]: a fresh venv with the project installed
# (SPEC like '.[test]'); prints the venv's python.
ci_venv() {
    local label=$1 py=$2 spec=$3 venv="$CI_TMP/venv-$1"
    shift 3
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q "$@" -e "$spec" >&2
    echo "$venv/bin/python"
}

# ci_pytest LABEL PYTHON [PYTEST-ARGS...]: run pytest, record its counts. Exit code 5 (no
# tests collected) is a failure like any other non-zero code.
ci_pytest() {
    local label=$1 py=$2 log="$CI_TMP/pytest-$1.log" started rc
    shift 2
    started=$(date +%s)
    set +e
    "$py" -m pytest "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    "$py" - "$log" "$label" "$("$py" -c 'import sys, sysconfig; print(sys.version.split()[0] + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))')" \
        "$(($(date +%s) - started))" >>"$CI_COUNTS" <<'PYEOF'
import re, sys
log, label, version, seconds = sys.argv[1:]
text = open(log, encoding="utf-8", errors="replace").read().splitlines()
line = next((l for l in reversed(text) if re.search(r"\b(passed|failed|error|no tests ran)", l)), "")
counts = {k: 0 for k in ("passed", "skipped", "failed", "error")}
for n, kind in re.findall(r"(\d+) (passed|skipped|failed|errors?)", line):
    counts[kind.rstrip("s") if kind.startswith("error") else kind] += int(n)
print("\t".join([label, version, *(str(counts[k]) for k in counts), seconds]))
PYEOF
    if [[ $rc -eq 5 ]]; then echo "!! pytest collected no tests ($label): that is a failure"; fi
    return "$rc"
}

# ci_report: the summary of steps and test counts; exit status for .ci/run.
ci_report() {
    ci_say "summary"
    printf '%-22s %-22s %s\n' "step" "status" "seconds"
    while IFS=$'\t' read -r name status secs; do
        printf '%-22s %-22s %s\n' "$name" "$status" "$secs"
    done <"$CI_SUMMARY"
    if [[ -s "$CI_COUNTS" ]]; then
        echo
        printf '%-18s %-10s %7s %8s %7s %7s %8s\n' run python passed skipped failed errors seconds
        while IFS=$'\t' read -r label version passed skipped failed errors secs; do
            printf '%-18s %-10s %7s %8s %7s %7s %8s\n' "$label" "$version" "$passed" \
                "$skipped" "$failed" "$errors" "$secs"
        done <"$CI_COUNTS"
    fi
    return "$CI_FAILED"
}

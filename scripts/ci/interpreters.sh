# shellcheck shell=bash
# The suite on every supported CPython: 3.11, 3.12, 3.13 from pyenv, and free-threaded 3.13t
# built by scripts/build-python-ft.sh.
#
# What runs where: the whole suite runs on the main interpreter (the README's command, step
# `readme`). The other interpreters run it without the files in CI_MAIN_ONLY: end-to-end
# tests that start many subprocesses and real servers (CLI, gunicorn/uvicorn services, the
# PyPI suite, pytester). They exercise the same library code as the rest, and running them four
# times would take CI past its 45 minutes. Every interpreter still runs the core, the race and
# stress tests and the bad-input corpus. On 3.13t it runs with the GIL forced off (PYTHON_GIL=0: an extension module without free-threading
# support would otherwise switch it back on) and the races run longer; the tests that assert
# a leak are skipped there with the reason (see tests/conftest.py).

# Seconds each stress race runs: the default elsewhere, longer where the GIL is off.
: "${LIVEMOD_CI_FT_STRESS_SECONDS:=20}"
# Extra pytest arguments for every interpreter's run, e.g. a few files when trying the CI
# machinery locally (word-split on spaces). CI leaves it empty: the whole suite.
read -r -a CI_PYTEST_ARGS <<<"${LIVEMOD_CI_PYTEST_ARGS:-}"
# Files run on the main interpreter only (see above).
CI_MAIN_ONLY=(tests/test_cli.py tests/test_cli_edges.py tests/test_web_service.py
    tests/test_webapp.py tests/test_service.py tests/test_integrations.py
    tests/test_host_control.py tests/test_control_server.py tests/realworld
    tests/test_testing.py tests/test_bench_smoke.py tests/test_etcd_rollout.py
    tests/test_etcd_failures.py tests/test_etcd_client.py tests/test_etcd_agent.py)
CI_IGNORE_MAIN_ONLY=()
for f in "${CI_MAIN_ONLY[@]}"; do CI_IGNORE_MAIN_ONLY+=("--ignore=$f"); done

# step_suite X.Y: the whole suite on pyenv's CPython X.Y.
step_suite() {
    local py
    py=$(ci_venv "py$1" "$(ci_python "$1")" '.[test]')
    ci_pytest "py$1" "$py" -q -p no:cacheprovider "${CI_IGNORE_MAIN_ONLY[@]}" \
        "${CI_PYTEST_ARGS[@]}"
}

# step_suite_ft: wait for the 3.13t build (started in the background), then the suite on it.
step_suite_ft() {
    local ft py
    ci_wait ft-build
    ft=$(tail -1 "$CI_TMP/ft-build.log")
    # No 3.13t wheels exist for the newest hypothesis or for cryptography: --only-binary
    # makes pip pick the newest release that installs (hypothesis: a pure-Python wheel), and
    # the signing extra is left out (its tests skip, saying so).
    py=$(ci_venv py3.13t "$ft" '.[test-ft]' --only-binary :all:)
    PYTHON_GIL=0 LIVEMOD_STRESS_SECONDS=$LIVEMOD_CI_FT_STRESS_SECONDS \
        ci_pytest py3.13t "$py" -q -p no:cacheprovider "${CI_IGNORE_MAIN_ONLY[@]}" \
        "${CI_PYTEST_ARGS[@]}"
}

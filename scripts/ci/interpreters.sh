# shellcheck shell=bash
# The suite on every supported CPython: 3.11, 3.12, 3.13 from pyenv, and free-threaded 3.13t
# built by scripts/build-python-ft.sh.
#
# What runs where: the whole suite runs on every interpreter (it contains the core, the race
# and stress tests and the bad-input corpus, which every interpreter must pass). On 3.13t it
# runs with the GIL forced off (PYTHON_GIL=0: an extension module without free-threading
# support would otherwise switch it back on) and the races run longer; the tests that assert
# a leak are skipped there with the reason (see tests/conftest.py).

# Seconds each stress race runs: the default elsewhere, longer where the GIL is off.
: "${LIVEMOD_CI_FT_STRESS_SECONDS:=20}"

# step_suite X.Y: the whole suite on pyenv's CPython X.Y.
step_suite() {
    local py
    py=$(ci_venv "py$1" "$(ci_python "$1")" '.[test]')
    ci_pytest "py$1" "$py" -q -p no:cacheprovider
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
        ci_pytest py3.13t "$py" -q -p no:cacheprovider
}

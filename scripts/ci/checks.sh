# shellcheck shell=bash
# The checks on the main interpreter: ruff, mypy (strict), the demo, and the README's test
# command exactly as a contributor types it.

# step_checks PYTHON: a venv with the test extra, then ruff, mypy, the demo.
step_checks() {
    local py
    py=$(ci_venv main "$1" '.[test]')
    # shellcheck disable=SC1091
    . "$(dirname "$py")/activate"
    echo "-- python: $(python -VV)"
    echo "-- ruff"
    ruff check src tests bench examples
    echo "-- mypy (strict, src/)"
    mypy src/livemod
    echo "-- livemod demo"
    timeout 120 livemod demo --seconds 6
}

# step_readme_tests: the README's test command, in the venv step_checks made.
step_readme_tests() {
    # shellcheck disable=SC1091
    . "$CI_TMP/venv-main/bin/activate"
    # The etcd tests run here and fail without etcd under CI: install it even when only
    # this step was selected (LIVEMOD_CI_ONLY=readme).
    command -v etcd >/dev/null || step_etcd_install
    ci_pytest readme "$(command -v python)" -q
}

# shellcheck shell=bash
# Packaging and documentation (ecosys's blocks).

# step_packaging PYTHON: the sdist and wheel as users get them -- built from the checkout
# (the wheel from the sdist), the wheel installed into a fresh venv, and run from outside the
# checkout, so a module or data file that only an editable install can see fails here.
step_packaging() {
    local py=$1 out="$CI_TMP/packaging" examples
    "$py" -m venv "$out/build-venv"
    "$out/build-venv/bin/python" -m pip install -q build
    "$out/build-venv/bin/python" -m build -q -o "$out/dist" . >/dev/null
    ls "$out"/dist/livemod-*.tar.gz "$out"/dist/livemod-*.whl
    "$py" -m venv "$out/venv"
    "$out/venv/bin/python" -m pip install -q "$out"/dist/livemod-*.whl
    cd "$out"
    timeout 120 "$out/venv/bin/livemod" demo --seconds 3
    examples=$("$out/venv/bin/python" -c 'import livemod, os; print(os.path.join(os.path.dirname(livemod.__file__), "examples"))')
    timeout 120 "$out/venv/bin/livemod" check "$examples/log.py" "$examples/greet.py"
}

# step_docs: the documentation site builds with warnings as errors (MkDocs + mkdocstrings),
# in the venv step_checks made, with the docs extra added.
step_docs() {
    # shellcheck disable=SC1091
    . "$CI_TMP/venv-main/bin/activate"
    python -m pip install -q -e '.[docs]'
    mkdocs build --strict --quiet --site-dir "$CI_TMP/site"
}

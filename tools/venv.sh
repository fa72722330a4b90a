# Sourced from the repository root by tools/test.sh and bench/run.sh: `.venv` (made with $PYTHON,
# default python3, if missing) with tpbuild installed in editable mode with the extras named in $1.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$1]"

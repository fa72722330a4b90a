# Sourced from the repository root by tools/test.sh and bench/run.sh: `.venv` (made with $PYTHON,
# default python3, if missing) with tpbuild installed in editable mode with the extras named in $1.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$1]"
# An editable install leaves the checkout's own modules uncompiled, and where PYTHONDONTWRITEBYTECODE is
# set nothing ever compiles them: every `python -m tpbuild` would compile them again. Compiled here,
# as a regular install would; an edited module is recompiled as usual (the pycs carry their source's mtime).
.venv/bin/python -m compileall -q tpbuild rules runtime >/dev/null

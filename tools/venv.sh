# Sourced from the repository root by tools/test.sh and bench/run.sh: `.venv` (made with $PYTHON,
# default python3, if missing) with tpbuild installed in editable mode with the extras named in $1.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# uv resolves, downloads, unpacks and compiles in parallel: a fresh test venv in 12 s where pip took 45 s
# (on a 2-core machine, wheels cached). pip installs uv (the lock extra needs it anyway), uv the rest. uv
# reads no pip configuration (pip.conf, PIP_* variables): where it cannot install, pip installs it all.
.venv/bin/python -m pip install --quiet --disable-pip-version-check uv
.venv/bin/uv pip install --quiet --python .venv/bin/python --compile-bytecode -e ".[$1]" ||
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$1]"
# An editable install leaves the checkout's own modules uncompiled, and where PYTHONDONTWRITEBYTECODE is
# set nothing ever compiles them: every `python -m tpbuild` would compile them again. Compiled here,
# as a regular install would; an edited module is recompiled as usual (the pycs carry their source's mtime).
.venv/bin/python -m compileall -q tpbuild rules runtime >/dev/null

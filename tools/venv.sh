# Sourced from the repository root by tools/test.sh and bench/run.sh: a venv ($VENV, default `.venv`;
# made with $PYTHON, default python3, if missing) with tpbuild installed with the extras named in $1:
# in editable mode, or with $2 = `release` as users install it, a regular install of the checkout as it
# is now (bench/run.sh: an editable install's finder cost every command 13 ms of imports at start).
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
if [ "${2:-}" = release ]; then
    TARGET=(".[$1]")
    REINSTALL=(--reinstall-package tpbuild)  # the checkout's code now, not the last run's copy
else
    TARGET=(-e ".[$1]")
    REINSTALL=()
fi
# uv resolves, downloads, unpacks and compiles in parallel: a fresh test venv in 12 s where pip took 45 s
# (on a 2-core machine, wheels cached). pip installs uv (the lock extra needs it anyway), uv the rest. uv
# reads no pip configuration (pip.conf, PIP_* variables): where it cannot install, pip installs it all.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --compile-bytecode "${REINSTALL[@]}" "${TARGET[@]}" ||
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check ${REINSTALL:+--force-reinstall} "${TARGET[@]}"
if [ "${2:-}" != release ]; then
    # An editable install leaves the checkout's own modules uncompiled, and where PYTHONDONTWRITEBYTECODE is
    # set nothing ever compiles them: every `python -m tpbuild` would compile them again. Compiled here,
    # as a regular install would; an edited module is recompiled as usual (the pycs carry their source's mtime).
    "$VENV/bin/python" -m compileall -q tpbuild rules runtime >/dev/null
fi

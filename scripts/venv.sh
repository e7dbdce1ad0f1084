# Sourced by test.sh and demo.sh: a project-local virtualenv with the project and its extras.
VENV="${KL_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)"
if [ ! -e "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[sim,test]'
  touch "$stamp"
fi

"""``python -m diffnorm``: the command-line interface where the ``diffnorm`` script is not
installed (a source tree on ``PYTHONPATH``, as on a machine without pip)."""

from diffnorm.cli import app

app(prog_name="diffnorm")

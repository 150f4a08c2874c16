"""``python -m pageserver_operator.cli``: the same as the ``pageserver-operator`` command."""

from pageserver_operator.cli import main

main()

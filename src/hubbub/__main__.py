"""``python -m hubbub``: the same CLI as the ``hubbub`` command."""

from hubbub.cli import main

main()

"""``python -m costline`` is the ``costline`` command."""

from costline.cli import main

main()

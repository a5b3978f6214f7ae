"""``python -m llamapy.cli``: the same as the ``llamapy`` command."""
from . import main

main()

"""`python -m mesh` runs the CLI."""

from mesh.cli import main

main()

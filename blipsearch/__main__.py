"""`python -m blipsearch`: the command line (the package `blipsearch.cli`, folder `cli/`)."""

from blipsearch.cli import run

run()

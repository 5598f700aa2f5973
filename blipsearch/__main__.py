from blipsearch.cli import run

run()

from blipsearch.cli.app import run

run()

from lhcml.cli import app

app()

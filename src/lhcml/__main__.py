from lhcml.cli import main

main()

from hsimap.cli.main import main

main()

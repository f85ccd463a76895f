from animator_cli.cli.app import main

main()

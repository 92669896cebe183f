from modelrepo.cli.main import main

main()

from datepin.cli import main

main()

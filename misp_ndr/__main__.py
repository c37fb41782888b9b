from misp_ndr.cli import main

main()
